# mypy: disable-error-code="no-untyped-call"
"""Train thrifty's tiny Llama-architecture Python code model on CPU.

The model is trained from scratch on the CPython standard library that ships
with the interpreter running this script, so it needs no downloads:

1. collect ``*.py`` files under ``sysconfig.get_paths()["stdlib"]`` (tests,
   site-packages and generated data tables excluded) and split them into a
   train/held-out set by hashing each file's relative path;
2. train a byte-level BPE tokenizer with the ``tokenizers`` library;
3. train a small ``LlamaForCausalLM`` with a plain PyTorch loop (AdamW, linear
   warmup then time-based cosine decay, bf16 autocast) until a wall-clock
   deadline or a step limit;
4. evaluate held-out perplexity against an add-one-smoothed unigram baseline
   on exactly the same target tokens, print samples, and save a Hugging Face
   model directory (bf16 ``model.safetensors``) that vLLM can serve.

Run from the repository root::

    python -m runtimes.model.train --out runtimes/model/tiny-py --minutes 12
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sysconfig
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

__all__ = [
    "BOS",
    "CHAT_TEMPLATE",
    "EOS",
    "PAD",
    "Corpus",
    "TrainConfig",
    "build_model",
    "collect_corpus",
    "evaluate_perplexity",
    "main",
    "parse_args",
    "train",
    "train_tokenizer",
    "unigram_perplexity",
]

BOS = "<|bos|>"
EOS = "<|eos|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [PAD, BOS, EOS]  # ids 0, 1, 2

# Each message becomes a Python comment header followed by its content, so the
# prompt stays inside the distribution of a code-only model. Like plain
# completions it carries no BOS: the model then continues "mid-file".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "# {{ message['role'] }}:\n{{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}# assistant:\n{% endif %}"
)

# Directories that are not ordinary library code: tests, third-party packages,
# caches, and generated tables (codec maps, pydoc topic dumps).
EXCLUDED_DIRS = frozenset(
    {
        "site-packages",
        "dist-packages",
        "__pycache__",
        "test",
        "tests",
        "idle_test",
        "encodings",
        "pydoc_data",
    }
)

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters for one training run."""

    out: Path
    minutes: float = 12.0
    max_steps: int = 0  # 0 = stop on the time budget only
    seed: int = 1234
    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 768
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    max_position_embeddings: int = 2048
    seq_len: int = 256
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    heldout_percent: float = 3.0
    max_file_bytes: int = 200_000
    eval_reserve_s: float = 30.0
    threads: int = 2


@dataclass(frozen=True)
class Corpus:
    """Source files split deterministically into train and held-out texts."""

    train: list[str]
    heldout: list[str]
    train_files: int
    heldout_files: int


# --------------------------------------------------------------------------- data


def _is_heldout(relative_path: str, percent: float) -> bool:
    """Deterministically assign a file to the held-out split by path hash."""
    digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") % 10_000
    return bucket < percent * 100


def _iter_stdlib_files(root: Path, max_bytes: int) -> Iterator[Path]:
    """Yield stdlib ``*.py`` files in sorted order, skipping excluded dirs."""
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if EXCLUDED_DIRS.intersection(relative.parts[:-1]):
            continue
        if path.name.startswith("_sysconfigdata"):
            continue
        if path.is_file() and 0 < path.stat().st_size <= max_bytes:
            yield path


def collect_corpus(percent: float, max_bytes: int) -> Corpus:
    """Read the stdlib sources and split them into train/held-out texts."""
    root = Path(sysconfig.get_paths()["stdlib"]).resolve()
    train_texts: list[str] = []
    heldout_texts: list[str] = []
    for path in _iter_stdlib_files(root, max_bytes):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        relative = path.relative_to(root).as_posix()
        bucket = heldout_texts if _is_heldout(relative, percent) else train_texts
        bucket.append(text)
    return Corpus(train_texts, heldout_texts, len(train_texts), len(heldout_texts))


# ---------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE tokenizer (no special tokens added on encode).

    Prompts are deliberately not prefixed with ``BOS``: training windows are
    cut at random offsets, so an unprefixed prompt reads as a mid-file
    continuation, while ``BOS`` (seen at every file start) asks for a new file.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def special_id(tokenizer: Tokenizer, token: str) -> int:
    """Id of a special token that must exist in the vocabulary."""
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise KeyError(f"special token {token!r} missing from tokenizer")
    return int(token_id)


def encode_documents(tokenizer: Tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """Encode texts as one stream of ``BOS doc EOS`` documents."""
    bos_id, eos_id = special_id(tokenizer, BOS), special_id(tokenizer, EOS)
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    chunks = [np.asarray([bos_id, *enc.ids, eos_id], dtype=np.int64) for enc in encodings]
    return torch.from_numpy(np.concatenate(chunks))


def wrap_tokenizer(tokenizer: Tokenizer, max_length: int) -> PreTrainedTokenizerFast:
    """Wrap the raw tokenizer for ``transformers`` with chat template and specials."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=max_length,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


# -------------------------------------------------------------------------- model


def build_model(cfg: TrainConfig, tokenizer: Tokenizer) -> LlamaForCausalLM:
    """Create a freshly initialised tied-embedding Llama model."""
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.hidden_size // cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=special_id(tokenizer, BOS),
        eos_token_id=special_id(tokenizer, EOS),
        pad_token_id=special_id(tokenizer, PAD),
    )
    return LlamaForCausalLM(config)


def count_parameters(model: torch.nn.Module) -> int:
    """Count unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------- training


def lr_at(step: int, progress: float, cfg: TrainConfig) -> float:
    """Linear warmup over steps, then cosine decay over training progress."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine)


def sample_batch(stream: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Draw random contiguous windows of ``seq_len + 1`` tokens."""
    high = stream.numel() - cfg.seq_len - 1
    starts = torch.randint(0, high, (cfg.batch_size,), generator=generator)
    offsets = torch.arange(cfg.seq_len + 1)
    return stream[starts[:, None] + offsets[None, :]]


def _loss(model: LlamaForCausalLM, window: torch.Tensor, bos_id: int) -> torch.Tensor:
    """Mean next-token loss for windows of shape (batch, seq_len + 1)."""
    inputs, targets = window[:, :-1], window[:, 1:].clone()
    targets[targets == bos_id] = IGNORE_INDEX  # document starts are not predictable
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=inputs).logits
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)


def train(
    model: LlamaForCausalLM,
    stream: torch.Tensor,
    cfg: TrainConfig,
    deadline: float,
    bos_id: int,
) -> tuple[int, int]:
    """Train until ``deadline`` (or ``max_steps``); return (steps, tokens)."""
    generator = torch.Generator().manual_seed(cfg.seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    model.train()
    start = time.monotonic()
    budget = max(deadline - start, 1e-6)
    step = tokens = 0
    smoothed = float("nan")
    while True:
        now = time.monotonic()
        if now >= deadline or (cfg.max_steps and step >= cfg.max_steps):
            break
        progress = (now - start) / budget
        if cfg.max_steps:
            progress = max(progress, step / cfg.max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, progress, cfg)
        loss = _loss(model, sample_batch(stream, cfg, generator), bos_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        tokens += cfg.batch_size * cfg.seq_len
        value = loss.item()
        smoothed = value if math.isnan(smoothed) else 0.95 * smoothed + 0.05 * value
        if step % 50 == 0:
            print(
                f"step {step:5d}  loss {smoothed:.3f}  lr {optimizer.param_groups[0]['lr']:.2e}"
                f"  tok/s {tokens / (time.monotonic() - start):.0f}",
                flush=True,
            )
    return step, tokens


# --------------------------------------------------------------------- evaluation


def heldout_windows(stream: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Split a stream into windows of ``seq_len + 1`` with stride ``seq_len``.

    Every token after the first is a target exactly once. The ragged tail is
    padded with ``-1``, which ``target_mask`` excludes from scoring.
    """
    n_windows = max(1, math.ceil((stream.numel() - 1) / seq_len))
    padded_len = n_windows * seq_len + 1
    padded = torch.full((padded_len,), -1, dtype=stream.dtype)
    padded[: stream.numel()] = stream
    idx = torch.arange(n_windows)[:, None] * seq_len + torch.arange(seq_len + 1)[None, :]
    return padded[idx]


def target_mask(windows: torch.Tensor, bos_id: int) -> torch.Tensor:
    """Boolean mask of scored targets: real tokens that are not ``BOS``."""
    targets = windows[:, 1:]
    return (targets >= 0) & (targets != bos_id)


@torch.no_grad()
def evaluate_perplexity(
    model: LlamaForCausalLM, windows: torch.Tensor, bos_id: int, batch_size: int = 16
) -> tuple[float, int]:
    """Held-out perplexity of the model; returns (ppl, scored tokens)."""
    model.eval()
    total_nll, total_tokens = 0.0, 0
    for batch in windows.split(batch_size):
        inputs = batch[:, :-1].clamp(min=0)
        targets = batch[:, 1:].clone()
        targets[~target_mask(batch, bos_id)] = IGNORE_INDEX
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=inputs).logits
        nll = torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1),
            targets.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        total_nll += nll.item()
        total_tokens += int((targets != IGNORE_INDEX).sum())
    return math.exp(total_nll / total_tokens), total_tokens


def unigram_perplexity(train_stream: torch.Tensor, windows: torch.Tensor, vocab_size: int, bos_id: int) -> float:
    """Add-one-smoothed unigram perplexity on the same targets as the model."""
    train_targets = train_stream[train_stream != bos_id]
    counts = torch.bincount(train_targets, minlength=vocab_size).double() + 1.0
    log_probs = counts.log() - counts.sum().log()
    targets = windows[:, 1:][target_mask(windows, bos_id)]
    return math.exp(-log_probs[targets].mean().item())


def _heal_trailing_space(
    tokenizer: PreTrainedTokenizerFast, prompt: str
) -> tuple[torch.Tensor, Callable[[int, torch.Tensor], list[int]] | None]:
    """Token healing for prompts such as ``"def "``.

    Byte-level BPE attaches a space to the *following* word, so a prompt that
    ends in a space ends in a token the model has rarely seen. Strip the
    trailing spaces and force the first generated token to start with them.
    """
    stripped = prompt.rstrip(" ")
    suffix = prompt[len(stripped) :]
    input_ids = tokenizer(stripped or prompt, return_tensors="pt").input_ids
    if not suffix or not stripped:
        return input_ids, None
    allowed = [
        i for i in range(len(tokenizer)) if (piece := str(tokenizer.decode([i]))).startswith(suffix) and piece.strip()
    ]
    everything = list(range(len(tokenizer)))
    prompt_len = input_ids.shape[-1]

    def allowed_tokens(_batch_id: int, ids: torch.Tensor) -> list[int]:
        return allowed if ids.shape[-1] == prompt_len else everything

    return input_ids, allowed_tokens


@torch.no_grad()
def generate_samples(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, prompts: Sequence[str]
) -> list[dict[str, str]]:
    """Greedy and temperature samples for a few code prompts."""
    model.eval()
    samples: list[dict[str, str]] = []
    for prompt in prompts:
        input_ids, allowed_tokens = _heal_trailing_space(tokenizer, prompt)
        modes: tuple[tuple[str, dict[str, Any]], ...] = (
            ("greedy", {"do_sample": False, "repetition_penalty": 1.1}),
            ("t=0.7", {"do_sample": True, "temperature": 0.7, "top_p": 0.95}),
        )
        for name, kwargs in modes:
            output = model.generate(  # type: ignore[misc]
                input_ids,
                max_new_tokens=60,
                pad_token_id=tokenizer.pad_token_id,
                prefix_allowed_tokens_fn=allowed_tokens,
                **kwargs,
            )
            text = str(tokenizer.decode(output[0], skip_special_tokens=True))
            samples.append({"prompt": prompt, "mode": name, "text": text})
            print(f"--- {name} | {prompt!r}\n{text}\n", flush=True)
    return samples


# -------------------------------------------------------------------------- output


def save_model_dir(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out: Path) -> None:
    """Save bf16 safetensors weights, tokenizer and generation config."""
    out.mkdir(parents=True, exist_ok=True)
    model.bfloat16()
    model.config.dtype = torch.bfloat16
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(out)
    _update_json(out / "config.json", {"torch_dtype": "bfloat16"})
    _move_chat_template_into_config(out)
    for path in out.iterdir():  # safetensors is written 0600; make it shippable
        path.chmod(0o644)


def _update_json(path: Path, updates: dict[str, object]) -> None:
    """Merge ``updates`` into a JSON file in place."""
    data = json.loads(path.read_text())
    data.update(updates)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _move_chat_template_into_config(out: Path) -> None:
    """Keep the chat template in ``tokenizer_config.json`` (one source of truth).

    transformers 5 writes it to ``chat_template.jinja``; older transformers and
    other loaders only read the config key. The class name is the portable one.
    """
    (out / "chat_template.jinja").unlink(missing_ok=True)
    _update_json(
        out / "tokenizer_config.json",
        {"chat_template": CHAT_TEMPLATE, "tokenizer_class": "PreTrainedTokenizerFast"},
    )


def dir_size_bytes(path: Path) -> int:
    """Total size of regular files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse command-line options into a ``TrainConfig``."""
    defaults = TrainConfig(out=Path("runtimes/model/tiny-py"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=defaults.out)
    parser.add_argument(
        "--minutes",
        type=float,
        default=defaults.minutes,
        help="wall-clock budget for the whole run, incl. tokenizer and eval",
    )
    parser.add_argument(
        "--steps", type=int, default=defaults.max_steps, help="optional step limit (0 = time budget only)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--layers", type=int, default=defaults.num_layers)
    parser.add_argument("--kv-heads", type=int, default=defaults.num_kv_heads)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--seq-len", type=int, default=defaults.seq_len)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--vocab-size", type=int, default=defaults.vocab_size)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument(
        "--eval-reserve",
        type=float,
        default=defaults.eval_reserve_s,
        help="seconds of the budget kept for eval, samples and saving",
    )
    args = parser.parse_args(argv)
    return TrainConfig(
        out=args.out,
        minutes=args.minutes,
        max_steps=args.steps,
        seed=args.seed,
        num_layers=args.layers,
        num_kv_heads=args.kv_heads,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        lr=args.lr,
        vocab_size=args.vocab_size,
        threads=args.threads,
        eval_reserve_s=args.eval_reserve,
    )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Run the full pipeline and return the training report."""
    cfg = parse_args(argv)
    t0 = time.monotonic()
    torch.set_num_threads(cfg.threads)
    _seed_everything(cfg.seed)

    corpus = collect_corpus(cfg.heldout_percent, cfg.max_file_bytes)
    print(f"files: {corpus.train_files} train / {corpus.heldout_files} held out", flush=True)
    raw_tokenizer = train_tokenizer(corpus.train, cfg.vocab_size)
    bos_id = special_id(raw_tokenizer, BOS)
    train_stream = encode_documents(raw_tokenizer, corpus.train)
    heldout_stream = encode_documents(raw_tokenizer, corpus.heldout)
    print(
        f"tokens: {train_stream.numel()} train / {heldout_stream.numel()} held out (prep {time.monotonic() - t0:.1f}s)",
        flush=True,
    )

    model = build_model(cfg, raw_tokenizer)
    n_params = count_parameters(model)
    print(f"parameters: {n_params:,}", flush=True)
    deadline = t0 + cfg.minutes * 60.0 - cfg.eval_reserve_s
    train_start = time.monotonic()
    steps, tokens = train(model, train_stream, cfg, deadline, bos_id)
    train_seconds = time.monotonic() - train_start

    windows = heldout_windows(heldout_stream, cfg.seq_len)
    model_ppl, scored = evaluate_perplexity(model, windows, bos_id)
    unigram_ppl = unigram_perplexity(train_stream, windows, raw_tokenizer.get_vocab_size(), bos_id)
    tokenizer = wrap_tokenizer(raw_tokenizer, cfg.max_position_embeddings)
    samples = generate_samples(model, tokenizer, ["def ", "import ", "class "])
    save_model_dir(model, tokenizer, cfg.out)

    report: dict[str, object] = {
        "parameters": n_params,
        "steps": steps,
        "tokens_trained": tokens,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.monotonic() - t0, 1),
        "train_corpus_tokens": int(train_stream.numel()),
        "heldout_files": corpus.heldout_files,
        "heldout_tokens_scored": scored,
        "heldout_perplexity": round(model_ppl, 3),
        "unigram_baseline_perplexity": round(unigram_ppl, 3),
        "hyperparameters": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "samples": samples,
    }
    report_path = cfg.out / "training_report.json"
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    size_bytes = dir_size_bytes(cfg.out)
    report["model_dir_bytes"] = size_bytes
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"parameters:           {n_params:,}")
    print(f"tokens trained:       {tokens:,} in {steps} steps ({train_seconds:.0f}s)")
    print(f"held-out perplexity:  {model_ppl:.3f} over {scored:,} tokens")
    print(f"unigram baseline ppl: {unigram_ppl:.3f}")
    print(f"model dir: {cfg.out} ({size_bytes / 1e6:.1f} MB), total {report['total_seconds']}s")
    return report


if __name__ == "__main__":
    main()
