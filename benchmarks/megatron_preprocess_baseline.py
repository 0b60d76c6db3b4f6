#!/usr/bin/env python
"""Baseline with the structure of Megatron-LM's tools/preprocess_data.py (not shipped in the megatron-core wheel).

Same pipeline: multiprocessing Pool(workers, initializer).imap(encode, lines, chunksize=32), json.loads and
SentencePiece encode_as_ids in the workers, results pickled back, one writer using megatron-core's
IndexedDatasetBuilder.add_document. Tokenizer as Megatron-LM's SentencePiece types (main's SentencePiece wrapper and
the legacy GPTSentencePieceTokenizer alike): encode_as_ids, eod = the model's eos_id.
"""
import argparse
import json
import multiprocessing
import sys
import time

STARTUP_T0 = time.time()

from megatron.core.datasets import indexed_dataset  # noqa: E402  (Megatron pays this import too)


class Encoder:
    """Per-worker tokenizer container, as in Megatron's script."""

    def __init__(self, args):
        self.args = args

    def initializer(self):
        import sentencepiece

        Encoder.tokenizer = sentencepiece.SentencePieceProcessor(model_file=self.args.tokenizer_model)
        Encoder.eod = Encoder.tokenizer.eos_id()

    def encode(self, json_line):
        data = json.loads(json_line)
        ids, lens = {}, {}
        for key in self.args.json_keys:
            text = data[key]
            sentences = text if isinstance(text, list) else [text]
            doc_ids, sentence_lens = [], []
            for sentence in sentences:
                sentence_ids = Encoder.tokenizer.encode_as_ids(sentence)
                if len(sentence_ids) > 0:
                    doc_ids.extend(sentence_ids)
                    sentence_lens.append(len(sentence_ids))
            if len(doc_ids) > 0 and self.args.append_eod:
                doc_ids.append(Encoder.eod)
                sentence_lens[-1] += 1
            ids[key] = doc_ids
            lens[key] = sentence_lens
        return ids, lens, len(json_line)


def process_json_file(args):
    import sentencepiece

    startup_start = time.time()
    fin = open(args.input, "r", encoding="utf-8")
    encoder = Encoder(args)
    vocab_size = sentencepiece.SentencePieceProcessor(model_file=args.tokenizer_model).get_piece_size()
    pool = multiprocessing.Pool(args.workers, initializer=encoder.initializer)
    encoded_docs = pool.imap(encoder.encode, fin, 32)
    builders, idx_files = {}, {}
    for key in args.json_keys:
        base = f"{args.output_prefix}_{key}_document"
        idx_files[key] = base + ".idx"
        builders[key] = indexed_dataset.IndexedDatasetBuilder(
            base + ".bin", dtype=indexed_dataset.DType.optimal_dtype(vocab_size))
    proc_start = time.time()
    total_bytes = 0
    count = 0
    print("Time to startup:", proc_start - startup_start, file=sys.stderr)
    for count, (doc, sentence_lens, bytes_processed) in enumerate(encoded_docs, start=1):
        total_bytes += bytes_processed
        for key in doc.keys():
            builders[key].add_document(doc[key], sentence_lens[key])
        if count % args.log_interval == 0:
            elapsed = time.time() - proc_start
            print(f"Processed {count} documents ({count / elapsed} docs/s, {total_bytes / elapsed / 1024 / 1024} MB/s).",
                  file=sys.stderr)
    fin.close()
    for key in args.json_keys:
        builders[key].finalize(idx_files[key])
    pool.close()
    pool.join()
    return count


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True)
    p.add_argument("--json-keys", nargs="+", default=["text"])
    p.add_argument("--tokenizer-model", required=True)
    p.add_argument("--output-prefix", required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--append-eod", action="store_true")
    p.add_argument("--log-interval", type=int, default=1000)
    args = p.parse_args(argv)
    n = process_json_file(args)
    print(f"done: {n} documents, {time.time() - STARTUP_T0:.2f}s including imports", file=sys.stderr)


if __name__ == "__main__":
    main()
