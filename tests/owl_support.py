"""A tiny random-initialised OWLv2 saved like a real one (config, weights, processor), so tests
load it through the production path (`TransformersDetector.load`) next to the Grounding DINO
of `detector_support`."""

from __future__ import annotations

from pathlib import Path

from .detector_support import WORDS

MAX_QUERY_TOKENS = 8  # per phrase (OWLv2-B/16 reads 16)


def build_tiny_owlv2(directory: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        CLIPTokenizerFast,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    letters = sorted({c for w in WORDS for c in w} | set("."))
    # BPE like CLIP's: "!" (the pad, id 0) and single characters (plain and word-final), then each
    # word merged whole; the special tokens last, as in CLIP, because OWLv2 treats a query whose
    # first id is 0 as padding.
    vocab: dict[str, int] = {}
    for token in ("!", *letters, *(f"{c}</w>" for c in letters)):
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        parts = [*word[:-1], f"{word[-1]}</w>"]
        while len(parts) > 1:
            merged = parts[0] + parts[1]
            merges.append((parts[0], parts[1]))
            vocab.setdefault(merged, len(vocab))
            parts = [merged, *parts[2:]]
    merges = list(dict.fromkeys(merges))
    for token in ("<|startoftext|>", "<|endoftext|>"):
        vocab[token] = len(vocab)
    tokenizer = CLIPTokenizerFast(
        vocab=vocab,
        merges=merges,
        unk_token="<|endoftext|>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="!",
        model_max_length=MAX_QUERY_TOKENS,
    )
    config = Owlv2Config(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": MAX_QUERY_TOKENS,
            "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": 0,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config).eval()
    with torch.no_grad():  # random heads saturate: keep boxes near the patch priors, scores spread
        model.box_head.dense2.weight.mul_(0.01)
        model.box_head.dense2.bias.zero_()
        model.class_head.logit_scale.weight.mul_(0.01)
        model.class_head.logit_scale.bias.zero_()
    processor = Owlv2Processor(
        image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}), tokenizer=tokenizer
    )
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
