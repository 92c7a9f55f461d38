"""Steps to reach AdamW's validation loss: a small Llama trained from scratch with AdamW and with NorMuon.

Same model initialisation, same token batches in the same order, same
schedule shape (linear warm-up over 5 % of the steps, then linear decay to
10 % of the peak), gradient clipping at 1.0, bfloat16 autocast. The data
is offline: the text of Python's ``pydoc_data.topics`` and the standard
library's sources, as bytes (vocabulary 256); every 20th source file is
held out for validation.

1. AdamW (the core's default optimizer) at each lr of ``--adamw-lrs``; the
   best final validation loss is the target L*.
2. NorMuon (the ``normuon`` paradigm; its AdamW part uses the best AdamW lr)
   for the same number of steps: the first evaluation at or below L*.
3. NorMuon with the whole schedule shortened to each of ``--fractions`` of
   the steps: the shortest run whose final loss reaches L*.

    python benchmarks/normuon_vs_adamw.py                      # 26M-parameter Llama, 500 steps
    python benchmarks/normuon_vs_adamw.py --steps 20 --hidden 64 --layers 2 --batch 4 --seq 64   # smoke test
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sysconfig
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import newcompute


def corpus(max_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) byte tokens."""
    import pydoc_data.topics

    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)
    train = ["\n".join(pydoc_data.topics.topics.values()).encode()]
    validation = []
    for index, path in enumerate(files):
        (validation if index % 20 == 0 else train).append(path.read_bytes())
    train_bytes = b"".join(train)[:max_bytes]
    validation_bytes = b"".join(validation)[: max_bytes // 10]
    return (
        torch.frombuffer(bytearray(train_bytes), dtype=torch.uint8),
        torch.frombuffer(bytearray(validation_bytes), dtype=torch.uint8),
    )


def windows(tokens: torch.Tensor, count: int, batch: int, seq: int, seed: int) -> torch.Tensor:
    """``count`` batches of start offsets, fixed by ``seed`` so every run reads the same tokens."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, tokens.numel() - seq, (count, batch), generator=generator)


def gather(tokens: torch.Tensor, starts: torch.Tensor, seq: int) -> torch.Tensor:
    """A ``(batch, seq)`` block of token ids; the model shifts labels itself."""
    return tokens[starts[:, None] + torch.arange(seq, device=tokens.device)].long()


def build_model(args: argparse.Namespace, device: str) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    config = LlamaConfig(
        vocab_size=256, hidden_size=args.hidden, intermediate_size=args.mlp, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.heads, max_position_embeddings=args.seq,
        tie_word_embeddings=False, attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config).to(device)


def evaluate(model: torch.nn.Module, tokens: torch.Tensor, starts: torch.Tensor, seq: int) -> float:
    model.eval()
    losses = []
    with torch.no_grad(), torch.autocast(tokens.device.type, dtype=torch.bfloat16):
        for batch_starts in starts:
            batch = gather(tokens, batch_starts, seq)
            losses.append(model(input_ids=batch, labels=batch).loss.float())
    model.train()
    return torch.stack(losses).mean().item()


def train(
    args: argparse.Namespace, data: dict[str, torch.Tensor], paradigm: str | None, lr: float, steps: int
) -> list[tuple[int, float]]:
    """Validation losses ``[(step, loss)]`` every ``eval_every`` steps and at the end."""
    device = data["train"].device.type
    model = build_model(args, device)
    registry = newcompute.get_registry()
    newcompute.apply(model, [paradigm] if paradigm else [], registry=registry)
    settings = newcompute.OptimizerSettings(lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    optimizer = newcompute.build_optimizer(model, settings, registry=registry)
    warmup = max(1, round(0.05 * steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 1.0 - 0.9 * (step - warmup) / max(1, steps - warmup)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    curve = []
    for step in range(steps):
        batch = gather(data["train"], data["starts"][step], args.seq)
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        if (step + 1) % args.eval_every == 0 or step + 1 == steps:
            curve.append((step + 1, evaluate(model, data["validation"], data["val_starts"], args.seq)))
            if not math.isfinite(curve[-1][1]):
                break
    return curve


def first_step_at_or_below(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((step for step, loss in curve if loss <= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--mlp", type=int, default=1408)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--adamw-lrs", type=float, nargs="+", default=[2.5e-4, 5e-4, 1e-3, 2e-3])
    parser.add_argument("--fractions", type=float, nargs="*", default=[0.5, 0.6])
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--eval-batches", type=int, default=16)
    parser.add_argument("--max-bytes", type=int, default=40_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    train_tokens, validation_tokens = corpus(args.max_bytes)
    data = {
        "train": train_tokens.to(args.device),
        "validation": validation_tokens.to(args.device),
        "starts": windows(train_tokens, args.steps, args.batch, args.seq, args.seed + 1).to(args.device),
        "val_starts": windows(validation_tokens, args.eval_batches, args.batch, args.seq, args.seed + 2).to(
            args.device
        ),
    }
    params = sum(p.numel() for p in build_model(args, "cpu").parameters())
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"{device_name}, torch {torch.__version__}: Llama {params / 1e6:.1f}M parameters, {args.steps} steps × "
          f"{args.batch}×{args.seq} tokens ({args.steps * args.batch * args.seq / 1e6:.1f}M tokens; "
          f"corpus {train_tokens.numel() / 1e6:.1f}M train / {validation_tokens.numel() / 1e6:.1f}M validation bytes)")

    adamw = {}
    for lr in args.adamw_lrs:
        began = time.perf_counter()
        adamw[lr] = train(args, data, None, lr, args.steps)
        print(f"  AdamW lr={lr:g}: final validation loss {adamw[lr][-1][1]:.4f}  ({time.perf_counter() - began:.0f} s)")
    best_lr = min(adamw, key=lambda lr: adamw[lr][-1][1])
    target = adamw[best_lr][-1][1]
    edge = " (at the edge of the sweep)" if best_lr in (min(args.adamw_lrs), max(args.adamw_lrs)) else ""
    print(f"target L* = {target:.4f}: AdamW's best final validation loss, lr={best_lr:g}{edge}")

    began = time.perf_counter()
    normuon = train(args, data, "normuon", best_lr, args.steps)
    reached = first_step_at_or_below(normuon, target)
    print(f"  NorMuon, {args.steps}-step schedule: final validation loss {normuon[-1][1]:.4f}  "
          f"({time.perf_counter() - began:.0f} s)")
    print("    step  AdamW(best)  NorMuon")
    for (step, a), (_, n) in zip(adamw[best_lr], normuon):
        print(f"    {step:5d}  {a:10.4f}  {n:8.4f}")
    if reached is None:
        print(f"  NorMuon did not reach L* within {args.steps} steps")
    else:
        print(f"  NorMuon reaches L* at step {reached} of the same schedule: "
              f"{reached / args.steps:.0%} of AdamW's steps")

    shortest = None
    for fraction in sorted(args.fractions):
        steps = round(fraction * args.steps)
        final = train(args, data, "normuon", best_lr, steps)[-1][1]
        ok = final <= target
        print(f"  NorMuon, {steps}-step schedule ({fraction:.0%}): final validation loss {final:.4f} "
              f"{'≤' if ok else '>'} L*")
        if ok and shortest is None:
            shortest = fraction
    if shortest is not None:
        print(f"  shortest full NorMuon schedule reaching L*: {shortest:.0%} of AdamW's steps")
    elif args.fractions:
        print(f"  no shortened NorMuon schedule (down to {min(args.fractions):.0%}) reached L*")


if __name__ == "__main__":
    main()
