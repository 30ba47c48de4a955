"""Reference tokenization for our tokenizer.json files (worker/test/train-interop.test.ts).

  tokenizer_ref.py DIR   reads DIR/tok.json {"model": dir, "texts": [...], "chats": [[{role, content}]...]}
                         writes DIR/tok.out.json {"ids": [[...]], "decoded": [...], "chats": [...]}:
                         the Rust `tokenizers` library's encodings and decodings, and transformers'
                         apply_chat_template (tokenize=False) with its Jinja engine.
"""
import json
import os
import sys

from tokenizers import Tokenizer
from transformers import AutoTokenizer


def main(d):
    with open(os.path.join(d, "tok.json")) as f:
        spec = json.load(f)
    tok = Tokenizer.from_file(os.path.join(spec["model"], "tokenizer.json"))
    ids = [tok.encode(t).ids for t in spec["texts"]]
    decoded = [tok.decode(i) for i in ids]
    auto = AutoTokenizer.from_pretrained(spec["model"])
    chats = [auto.apply_chat_template(c, tokenize=False, add_generation_prompt=False) for c in spec["chats"]]
    with open(os.path.join(d, "tok.out.json"), "w") as f:
        json.dump({"ids": ids, "decoded": decoded, "chats": chats}, f)
    print(json.dumps({"ok": True}))


if __name__ == "__main__":
    main(*sys.argv[1:])
