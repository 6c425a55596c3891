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


ALL_CUBES = ("red_cube", "green_cube", "blue_cube")


def every_plan(domain, scene):
    import itertools

    return [tuple(Step("pick_place", (c, "bin")) for c in order) for k in range(4) for order in itertools.permutations(ALL_CUBES, k)]


def test_the_language_model_decides_what_the_rules_cannot_read_by_search(model, domain):
    """An exclusion goes to the language model; the search (constrained decoding) returns the
    likeliest plan among all that the vocabulary allows, found by brute force here."""
    scene = domain.scene(list(ALL_CUBES) + ["bin"])
    config = PlannerConfig(search=SearchConfig(iterations=2000, time_budget_s=120.0), min_plan_probability=0.0)
    planner = TaskPlanner(domain, model, config)
    instruction = "everything except the green cube into the bin"
    plan = planner.plan(instruction, scene, state=frozenset())
    assert plan.goal_from == "language model (search)" and "no goal" in plan.route_reason
    assert plan.search.stopped == "solved" and plan.proposal_stats.proposals == 0  # no sampling in search mode
    source = planner.proposals(instruction, scene)
    best = max(every_plan(domain, scene), key=lambda p: source.plan_log_likelihood(p))
    assert plan.steps == best and plan.ok == bool(best)
    assert set(plan.goal.facts) == {("in", s.arguments[0], "bin") for s in best}
    refused = TaskPlanner(domain, model, PlannerConfig(goal_source="rules")).plan(instruction, scene, state=frozenset())
    assert not refused.ok and "names no goal" in refused.message and refused.goal_from == "rules"
    unsure = TaskPlanner(domain, model, PlannerConfig(search=config.search, min_plan_probability=0.99)).plan(instruction, scene, state=frozenset())
    assert not unsure.ok and unsure.steps == () and "not confident" in unsure.message


def test_vote_mode_uses_samples_and_uniform_priors(model, domain):
    scene = domain.scene(list(ALL_CUBES) + ["bin"])
    calls = []
    original = model.log_likelihoods
    config = PlannerConfig(search=SearchConfig(iterations=60), proposals=ProposalConfig(samples=4, max_new_tokens=24),
                           language_model_mode="vote")
    planner = TaskPlanner(domain, model, config)
    try:
        model.log_likelihoods = lambda *a, **k: calls.append(a) or original(*a, **k)
        plan = planner.plan("everything except the green cube into the bin", scene, state=frozenset())
    finally:
        model.log_likelihoods = original
    assert plan.goal_from == "language model (vote)" and plan.proposal_stats.proposals > 0
    assert calls == []  # the language model only generated: no likelihood was asked for
    if plan.ok:  # a random model may propose nothing valid: then the goal is refused
        assert plan.steps and not plan.search is None


def test_a_correction_is_read_against_the_running_task(model, domain):
    from wam_ros.planning.proposer import RunningTask

    scene = domain.scene(list(ALL_CUBES) + ["bin"])
    red, green, blue = (Step("pick_place", (c, "bin")) for c in ALL_CUBES)
    running = RunningTask("put the red, green and blue cubes in the bin, in that order", (red,), (green, blue))
    planner = TaskPlanner(domain, model, PlannerConfig(search=SearchConfig(iterations=100), min_plan_probability=0.0))
    state = frozenset({("in", "red_cube", "bin")})
    plan = planner.plan("no, the blue one first", scene, state=state, running=running)
    assert plan.route_reason == "a correction of the running task" and red not in plan.steps
    prompt = model.tokenizer.decode(planner.proposals("no, the blue one first", scene, running=running).prompt_ids)
    assert "Running task: put the red, green and blue cubes" in prompt and "Done: pick_place(red_cube, bin)" in prompt
    assert "Planned: pick_place(green_cube, bin), pick_place(blue_cube, bin)" in prompt


def test_a_lora_adapter_trains_merges_exactly_and_refuses_another_base(tiny_model_dir, domain, tmp_path):
    from wam_ros.planning import finetune, synthetic
    from wam_ros.planning.proposer import system_message

    base = LanguageModel.load(str(tiny_model_dir), threads=1)
    examples = synthetic.training_examples(16, seed=1)
    config = finetune.AdapterConfig(rank=4, layers=1)
    system = system_message(domain, compact=True)
    encoded = finetune.encode_examples(base.model, base, system, examples, config)
    tensors, result = finetune.finetune(base.model, encoded, config, steps=30, batch_size=4, learning_rate=1e-2)
    assert sum(result.losses[-5:]) < sum(result.losses[:5])  # it learns
    finetune.save_adapter(tmp_path / "adapter", tensors, config, finetune.base_signature(base.model), {"note": "test"})
    # The merged model computes what the adapted one computed in training.
    LoRALinear = finetune._lora_class()
    for name, parent, attribute in finetune._adapted_modules(base.model, config):
        lora = LoRALinear(getattr(parent, attribute), config.rank, config.alpha)
        lora.A.data, lora.B.data = tensors[f"{name}.A"].half().float(), tensors[f"{name}.B"].half().float()
        setattr(parent, attribute, lora)
    wrapped_loss = float(finetune._batch_loss(base.model, encoded[:4], config))
    merged = LanguageModel.load(str(tiny_model_dir), threads=1, adapter=str(tmp_path / "adapter"))
    assert merged.adapter["note"] == "test"
    merged_encoded = finetune.encode_examples(merged.model, merged, system, examples[:4], config)
    assert float(finetune._batch_loss(merged.model, merged_encoded, config)) == pytest.approx(wrapped_loss, rel=1e-4)
    other = build_tiny_model(tmp_path / "other")
    torch.manual_seed(5)
    with pytest.raises(LanguageModelError, match="trained for base model"):
        import transformers

        model = transformers.AutoModelForCausalLM.from_pretrained(other)
        model.model.layers[-1].mlp.down_proj.weight.data.add_(1.0)
        model.save_pretrained(other)
        LanguageModel.load(str(other), threads=1, adapter=str(tmp_path / "adapter"))
