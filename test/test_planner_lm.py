"""The language-model wrapper and the whole planner with a tiny causal LM built here (random weights, offline)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wam_ros.planning.domain import Step, load_domain
from wam_ros.planning.language_model import LanguageModel, LanguageModelError
from wam_ros.planning.mcts import SearchConfig
from wam_ros.planning.planner import PlannerConfig, TaskPlanner
from wam_ros.planning.proposals import parse_plan
from wam_ros.planning.proposer import ProposalConfig, plan_messages
from wam_ros.robot import load_robot_config

CORPUS = [
    "You plan tasks for a robot arm. Its skills: pick_place(movable, container): put the movable in the container",
    "Answer with one step per line, written as skill(object, object). End with the line: done",
    "Objects: red_cube (movable), green_cube (movable), blue_cube (movable), bin (container)",
    "Task: put the green, blue and red cubes in the bin, in that order",
    "pick_place(red_cube, bin)\npick_place(green_cube, bin)\npick_place(blue_cube, bin)\ndone",
    "system: user: assistant: yellow purple",
]


def build_tiny_model(directory: Path) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer trained on a few lines; saved like any HF model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<eos>")
    config = LlamaConfig(
        vocab_size=fast.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=2048, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
        bos_token_id=fast.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="module")
def model(tiny_model_dir) -> LanguageModel:
    return LanguageModel.load(str(tiny_model_dir), threads=1)


@pytest.fixture(scope="module")
def domain():
    return load_domain(load_robot_config("panda_sim").extra["planner"])


def reference_log_likelihood(model: LanguageModel, context: tuple[int, ...], text: str) -> float:
    ids = torch.tensor([context + model.encode(text)])
    with torch.inference_mode():
        log_probs = torch.log_softmax(model.model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    return float(log_probs.gather(1, targets[:, None])[len(context) - 1 :].sum())


def test_loading_a_missing_directory_names_it(tmp_path):
    with pytest.raises(LanguageModelError, match=str(tmp_path / "nothing")):
        LanguageModel.load(str(tmp_path / "nothing"))


def test_prompt_without_a_chat_template_is_a_plain_transcript(model, domain):
    scene = domain.scene(["red_cube", "bin"])
    prompt = model.chat_prompt(plan_messages(domain, "put the red cube in the bin", scene))
    assert prompt.startswith("system: You plan tasks") and prompt.endswith("assistant:\n")
    assert "pick_place(yellow_cube, bin)" in prompt  # the robot config's worked example
    assert "Objects: red_cube (movable), bin (container)" in prompt


def test_sampling_is_deterministic_per_seed(model):
    prompt = model.encode("Task: put the red cube in the bin\n", first=True)
    first = model.sample(prompt, 3, max_new_tokens=12, temperature=1.0, seed=5)
    assert len(first) == 3 and all(isinstance(sample.text, str) for sample in first)
    assert model.sample(prompt, 3, max_new_tokens=12, temperature=1.0, seed=5) == first
    greedy = model.sample(prompt, 2, max_new_tokens=12, temperature=0.0, seed=0)
    assert greedy[0] == greedy[1]
    # Cut by the token limit before any end-of-text: the samples say so.
    assert [sample.finished for sample in model.sample(prompt, 3, max_new_tokens=1, temperature=1.0, seed=5)] == [False] * 3


def test_cached_log_likelihoods_equal_a_plain_forward_pass(model):
    context = model.encode("Objects: red_cube (movable), bin (container)\nTask: put the red cube in the bin\n", first=True)
    lines = ["pick_place(red_cube, bin)\n", "done", "pick_place(green_cube, bin)\n"]
    for ids in (context, context, context + model.encode("pick_place(red_cube, bin)\n")):  # miss, hit, extension
        scores = model.log_likelihoods(ids, lines)
        assert scores == pytest.approx([reference_log_likelihood(model, ids, line) for line in lines], abs=1e-4)
        assert all(score < 0 for score in scores)


def test_planner_with_a_random_language_model_counts_invalid_proposals_and_still_plans(model, domain):
    scene = domain.scene(["red_cube", "green_cube", "blue_cube", "bin"])
    config = PlannerConfig(search=SearchConfig(iterations=60, time_budget_s=60.0), proposals=ProposalConfig(samples=4, max_new_tokens=24))
    planner = TaskPlanner(domain, model, config)
    instruction = "put the green, blue and red cubes in the bin, in that order"
    plan = planner.plan(instruction, scene)
    assert plan.ok and plan.steps == tuple(Step("pick_place", (f"{c}_cube", "bin")) for c in ("green", "blue", "red"))
    assert plan.instructions[0] == "put the green cube in the bin"
    stats = plan.proposal_stats
    assert 0 <= stats.invalid <= stats.proposals <= 4
    # The counts agree with parsing the same samples again (sampling is seeded).
    source = planner.proposals(instruction, scene)
    assert len(source.samples) == 4 and stats.truncated == sum(not sample.finished for sample in source.samples)
    judged = [s.text if s.finished else s.text.rsplit("\n", 1)[0] for s in source.samples if s.finished or "\n" in s.text]
    assert stats.proposals == len(judged)
    assert sum(not parse_plan(text, domain, scene).valid for text in judged) == stats.invalid
    again = planner.plan(instruction, scene)
    assert again.steps == plan.steps and again.search.iterations == plan.search.iterations


def test_planner_replans_from_a_state_and_reports_ungrounded_instructions(model, domain):
    scene = domain.scene(["red_cube", "green_cube", "blue_cube", "bin"])
    planner = TaskPlanner(domain, model, PlannerConfig(search=SearchConfig(iterations=40), proposals=ProposalConfig(samples=2, max_new_tokens=16)))
    halfway = frozenset({("in", "green_cube", "bin")})
    plan = planner.plan("put the green, blue and red cubes in the bin, in that order", scene, state=halfway)
    assert plan.steps == (Step("pick_place", ("blue_cube", "bin")), Step("pick_place", ("red_cube", "bin")))
    done = planner.plan("put the green cube in the bin", scene, state=halfway)
    assert done.ok and done.steps == () and "already" in done.message
    nothing = planner.plan("make me a sandwich", scene)
    assert not nothing.ok and nothing.steps == () and "names no goal" in nothing.message


def test_imagination_decides_what_is_done_when_the_state_is_unknown(model, domain):
    scene = domain.scene(["red_cube", "green_cube", "bin"])
    calls: list[str] = []

    def imagine(instruction: str) -> float | None:
        calls.append(instruction)
        return {"put the red cube in the bin": 0.97, "put the green cube in the bin": 0.2}.get(instruction)

    planner = TaskPlanner(domain, model, PlannerConfig(search=SearchConfig(iterations=40), proposals=ProposalConfig(samples=1, max_new_tokens=8)), imagine)
    plan = planner.plan("put the red and green cubes in the bin", scene, state=None)
    assert plan.steps == (Step("pick_place", ("green_cube", "bin")),)  # red is already in: the world model sees it finished
    assert sorted(calls) == ["put the green cube in the bin", "put the red cube in the bin"]
    assert plan.step_scores == (pytest.approx(0.2),)


def test_imagination_stops_asking_after_a_call_without_an_answer(model, domain):
    scene = domain.scene(["red_cube", "green_cube", "blue_cube", "bin"])
    calls: list[str] = []

    def silent(instruction: str) -> float | None:
        calls.append(instruction)
        return None

    planner = TaskPlanner(domain, model, PlannerConfig(search=SearchConfig(iterations=20), proposals=ProposalConfig(samples=1, max_new_tokens=8)), silent)
    plan = planner.plan("put the red and green cubes in the bin", scene, state=frozenset())
    assert len(calls) == 1 and plan.ok and set(plan.imagined.values()) == {None}
