"""Writes records the way the Python data stack does, for the worker's dataset readers.

usage: write_datasets.py <records.json> <out dir>
records.json: {"train": [record, ...], "test": [record, ...]}
Writes, from the same records:
  train.snappy.parquet, train.gzip.parquet, train.zstd.parquet  (pyarrow.parquet, row groups of 7)
  saved/              a Dataset as `datasets.save_to_disk` lays it out: Arrow IPC stream
                      shards data-0000N-of-00002.arrow + state.json + dataset_info.json
  dict/               a DatasetDict: dataset_dict.json + train/ and test/ saved datasets
  hub/data/           the Hub's Parquet layout: train-00000-of-00001.parquet, test-...
  train.arrow-file.arrow  the Arrow IPC *file* format (Feather v2)
"""
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq

records = json.load(open(sys.argv[1]))
out = sys.argv[2]
os.makedirs(out, exist_ok=True)


def table(rows):
    return pa.Table.from_pylist(rows)


def save_to_disk(rows, d, shards=2):
    os.makedirs(d, exist_ok=True)
    t = table(rows)
    n = len(rows)
    files = []
    for i in range(shards):
        lo, hi = i * n // shards, (i + 1) * n // shards
        name = f"data-{i:05d}-of-{shards:05d}.arrow"
        with pa.ipc.new_stream(os.path.join(d, name), t.schema) as w:
            w.write_table(t.slice(lo, hi - lo), max_chunksize=5)
        files.append({"filename": name})
    json.dump({"_data_files": files, "_fingerprint": "test", "_format_type": None, "_split": None}, open(os.path.join(d, "state.json"), "w"))
    json.dump({"features": {}}, open(os.path.join(d, "dataset_info.json"), "w"))


train = records["train"]
for codec in ["snappy", "gzip", "zstd"]:
    pq.write_table(table(train), os.path.join(out, f"train.{codec}.parquet"), compression=codec, row_group_size=7)
save_to_disk(train, os.path.join(out, "saved"))
os.makedirs(os.path.join(out, "dict"), exist_ok=True)
for split, rows in records.items():
    save_to_disk(rows, os.path.join(out, "dict", split), shards=1)
json.dump({"splits": list(records)}, open(os.path.join(out, "dict", "dataset_dict.json"), "w"))
os.makedirs(os.path.join(out, "hub", "data"), exist_ok=True)
for split, rows in records.items():
    pq.write_table(table(rows), os.path.join(out, "hub", "data", f"{split}-00000-of-00001.parquet"))
with pa.OSFile(os.path.join(out, "train.arrow-file.arrow"), "wb") as f:
    with pa.ipc.new_file(f, table(train).schema) as w:
        w.write_table(table(train))
