"""``wam-ros train-planner-lm``: finetune the planner's language model (a LoRA adapter) on synthetic plans.

Examples come from wam_ros.planning.synthetic's TRAIN wordings (exclusions, quantifiers,
relations, corrections; random colours, containers and layouts); the benchmark's HELD_OUT
wordings are never used. Validation: constrained greedy decoding (each line chosen by
likelihood among the scene's valid steps and ``done``) on fresh TRAIN-wording examples, before
and after training. Everything runs offline on the bundled SmolLM2.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="adapter directory to write")
    parser.add_argument("--robot", default="panda_sim", help="robot config whose skill vocabulary the prompts show")
    parser.add_argument("--examples", type=int, default=800, help="synthetic training examples")
    parser.add_argument("--validation", type=int, default=80, help="synthetic validation examples (TRAIN wordings, new scenes)")
    parser.add_argument("--steps", type=int, default=400, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--layers", type=int, default=6, help="adapt the top this many transformer blocks")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--language-model-path", default="", help="base model directory; empty: the bundled SmolLM2")
    parser.add_argument("--skip-baseline", action="store_true", help="do not validate the base model before training")


def validate(model, domain, examples, log_every: int = 0) -> float:
    """Share of examples whose constrained greedy plan does what they ask."""
    from wam_ros.planning.finetune import example_messages
    from wam_ros.planning.proposer import system_message
    from wam_ros.planning.synthetic import plan_satisfies

    system = system_message(domain, compact=True)
    right = 0
    for index, example in enumerate(examples, 1):
        ids = model.encode(model.chat_prompt(example_messages(system, example)), first=True)
        remaining, plan = list(example.movables), []
        while True:
            lines = [f"pick_place({m}, {example.container})\n" for m in remaining] + ["done"]
            scores = model.log_likelihoods(ids, lines)
            best = max(range(len(lines)), key=scores.__getitem__)
            if lines[best] == "done" or not remaining:
                break
            choice = remaining.pop(best)
            plan.append(choice)
            ids = ids + model.encode(lines[best])
        right += plan_satisfies(example, plan)
        if log_every and index % log_every == 0:
            print(f"  validation {index}/{len(examples)}: {right} right", flush=True)
    return right / max(len(examples), 1)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from wam_ros.planning.domain import DomainError, load_domain
    from wam_ros.planning.finetune import AdapterConfig, base_signature, encode_examples, finetune, save_adapter, training_kinds_summary
    from wam_ros.planning.language_model import LanguageModel, LanguageModelError
    from wam_ros.planning.proposer import system_message
    from wam_ros.planning.synthetic import training_examples
    from wam_ros.robot import ConfigError, load_robot_config

    torch.set_num_threads(args.threads)
    try:
        robot = load_robot_config(args.robot)
        domain = load_domain(robot.extra.get("planner"), f"{robot.path}: robot.planner")
        model = LanguageModel.load(args.language_model_path, threads=args.threads)
    except (ConfigError, DomainError, LanguageModelError) as error:
        print(f"wam-ros train-planner-lm: {error}", file=sys.stderr)
        return 2
    config = AdapterConfig(rank=args.rank, layers=args.layers)
    train = training_examples(args.examples, seed=args.seed)
    validation = training_examples(args.validation, seed=args.seed + 100_003)
    record: dict = {"training": {"examples": len(train), "kinds": training_kinds_summary(train), "seed": args.seed,
                                 "steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                                 "wordings": "wam_ros.planning.synthetic.TRAIN"}}
    if not args.skip_baseline:
        started = time.process_time()
        record["validation_accuracy_base"] = validate(model, domain, validation)
        print(f"base model, constrained greedy on {len(validation)} validation examples: {record['validation_accuracy_base']:.2f} "
              f"({time.process_time() - started:.0f} CPU-s)", flush=True)
    system = system_message(domain, compact=True)
    cpu = time.process_time()
    bar = tqdm(total=len(train), desc="encode (frozen blocks)", unit="example")
    encoded = encode_examples(model.model, model, system, train, config, progress=bar.update)
    bar.close()
    encode_cpu_s = time.process_time() - cpu
    bar = tqdm(total=args.steps, desc="finetune", unit="step")

    def progress(step: int, loss: float) -> None:
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")

    try:
        tensors, result = finetune(model.model, encoded, config, args.steps, args.batch_size, args.learning_rate, args.seed, progress)
    except KeyboardInterrupt:
        bar.close()
        print("wam-ros train-planner-lm: interrupted; nothing written", file=sys.stderr)
        return 130
    bar.close()
    record["training"].update(cpu_s=round(encode_cpu_s + result.cpu_s, 1), encode_cpu_s=round(encode_cpu_s, 1),
                              wall_s=round(result.wall_s, 1), final_loss=sum(result.losses[-20:]) / max(len(result.losses[-20:]), 1))
    save_adapter(args.out, tensors, config, base_signature(model.model), record)
    tuned = LanguageModel.load(args.language_model_path, threads=args.threads, adapter=str(args.out))
    record["validation_accuracy"] = validate(tuned, domain, validation)
    save_adapter(args.out, tensors, config, base_signature(model.model), record)
    print(f"adapter: {(encode_cpu_s + result.cpu_s) / 60:.1f} CPU-minutes, loss {record['training']['final_loss']:.3f}; "
          f"validation (constrained greedy) {record['validation_accuracy']:.2f}; wrote {args.out}")
    return 0
