"""A tiny random-initialised Grounding DINO saved like a real one (config, weights, processor),
so tests load it through the production path (`TransformersDetector.load`)."""

from __future__ import annotations

from pathlib import Path

# Every word the tests prompt with; anything else becomes [UNK].
WORDS = ("car", "person", "cat", "dog", "remote", "control", "a", "red", "tree")
MAX_TEXT_LEN = 32


def build_tiny_detector(directory: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    vocab = {w: i for i, w in enumerate(("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS))}
    # transformers 5.x: the vocabulary must be passed in memory (`vocab_file=` is ignored).
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    backbone = SwinConfig(
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        image_size=64,
        out_features=["stage2", "stage3", "stage4"],
    )
    text = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,  # GroupNorm(32, d_model) in the model
        encoder_layers=1,
        decoder_layers=2,  # weight tying between decoder layers needs two
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=20,
        max_text_len=MAX_TEXT_LEN,
        num_feature_levels=3,
        encoder_n_points=2,
        decoder_n_points=2,
        use_timm_backbone=False,
    )
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(config).eval()
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}),
        tokenizer=tokenizer,
    )
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
