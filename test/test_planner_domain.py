"""The planner's vocabulary: config validation, scene, symbolic model, goal grounding, execution bookkeeping."""
from __future__ import annotations

import pytest

from wam_ros.planning.domain import DomainError, Goal, Step, load_domain, mentioned_objects
from wam_ros.planning.execution import Action, ExecutionConfig, Interruption, PlanExecution, Status, state_from_task_status
from wam_ros.robot import load_robot_config
from wam_ros.sim.tasks import BIN_THREE_REWORDINGS

RED, GREEN, BLUE = (Step("pick_place", (f"{c}_cube", "bin")) for c in ("red", "green", "blue"))


@pytest.fixture(scope="module")
def domain():
    return load_domain(load_robot_config("panda_sim").extra["planner"])


@pytest.fixture(scope="module")
def scene(domain):
    # Names as the sim reports them, including objects of other tasks the vocabulary does not know.
    return domain.scene(["red_cube", "green_cube", "blue_cube", "bin", "zone", "target", "Bad Name!"])


def test_scene_keeps_only_vocabulary_objects(scene):
    assert scene.names == ("red_cube", "green_cube", "blue_cube", "bin")
    assert scene.get("bin").category == "container" and scene.get("zone") is None


def test_steps_are_checked_against_skills_and_categories(domain, scene):
    assert domain.grounded_steps(scene) == [RED, GREEN, BLUE]
    assert domain.check_step(RED, scene) is None
    assert "unknown skill" in domain.check_step(Step("throw", ("red_cube",)), scene)
    assert "takes 2" in domain.check_step(Step("pick_place", ("red_cube",)), scene)
    assert "no object 'purple_cube'" in domain.check_step(Step("pick_place", ("purple_cube", "bin")), scene)
    assert "must be a movable" in domain.check_step(Step("pick_place", ("bin", "red_cube")), scene)
    assert domain.instruction(RED) == "put the red cube in the bin"
    assert domain.step_from_instruction("Put the  red cube in the bin", scene) == RED
    assert domain.step_from_instruction("put the red cube on the table", scene) is None


def test_the_instruction_names_the_bin_slot_the_demos_used(domain, scene):
    # The k-th cube into the bin goes to slot k, and bin_three's subtask instructions say so.
    assert domain.instructions((GREEN, RED, BLUE)) == (
        "put the green cube in the bin", "put the red cube in the near end of the bin", "put the blue cube in the far end of the bin")
    one_in = frozenset({("in", "blue_cube", "bin")})
    assert domain.instruction(RED, one_in) == "put the red cube in the near end of the bin"
    crowded = frozenset({("in", f"cube{i}", "bin") for i in range(5)})
    assert domain.instruction(RED, crowded) == "put the red cube in the far end of the bin"  # the last one past the end
    assert domain.instructions((GREEN,), one_in) == ("put the green cube in the near end of the bin",)
    assert domain.step_from_instruction("put the green cube in the near end of the bin", scene) == GREEN
    assert domain.step_from_instruction("put the green cube in the left end of the bin", scene) is None


@pytest.mark.parametrize("seed", [5000, 5001, 5002, 30000])
def test_plans_in_the_sims_order_read_as_the_sims_subtask_instructions(domain, seed):
    from wam_ros.sim.config import SimConfig
    from wam_ros.sim.tasks import make_task

    spec = make_task("bin_three", SimConfig()).sample(seed)
    steps = tuple(Step("pick_place", (cube, "bin")) for cube in spec.cubes)
    assert domain.instructions(steps) == tuple(spec.subtask_instructions)


def test_symbolic_effects(domain):
    outcome = domain.apply(frozenset(), RED)
    assert outcome.applicable and outcome.useful and outcome.state == {("in", "red_cube", "bin")}
    again = domain.apply(outcome.state, RED)
    assert again.applicable and not again.useful


@pytest.mark.parametrize(
    ("instruction", "facts", "ordered"),
    [
        ("put the green, blue and red cubes in the bin, in that order", ["green", "blue", "red"], True),
        ("put the blue and the red cubes in the bin", ["blue", "red"], False),
        ("Put the red cube in the bin.", ["red"], False),
        ("put the red cube on the table", [], False),  # "in" missing: no skill matches
        ("put the purple cube in the bin", [], False),  # no such object
        ("sing a song", [], False),
    ],
)
def test_goal_grounding(domain, scene, instruction, facts, ordered):
    goal = domain.ground_goal(instruction, scene)
    assert goal == Goal(tuple(("in", f"{c}_cube", "bin") for c in facts), ordered)


@pytest.mark.parametrize("instruction", [wording.format("green", "blue", "red") for wording in BIN_THREE_REWORDINGS])
def test_goal_grounding_of_wordings_outside_the_skill_template(domain, scene, instruction):
    # No "put ... in": pick_place is the only skill relating the mentioned cubes and the bin.
    goal = domain.ground_goal(instruction, scene)
    assert goal == Goal(tuple(("in", f"{c}_cube", "bin") for c in ("green", "blue", "red")), True)


def test_negated_mentions_do_not_count(domain, scene):
    assert domain.ground_goal("put the red cube in the bin, not the blue one", scene) == Goal((("in", "red_cube", "bin"),), False)
    assert not domain.ground_goal("put everything except the green cube in the bin", scene)


def test_a_wording_two_skills_fit_grounds_only_the_named_skill():
    two = load_domain({
        "categories": {"cube": "movable", "bin": "container"},
        "skills": {
            "pick_place": {"arguments": ["movable", "container"], "instruction": "put the {0} in the {1}", "effects": ["in({0}, {1})"]},
            "push": {"arguments": ["movable", "container"], "instruction": "push the {0} towards the {1}", "effects": ["near({0}, {1})"]},
        },
    })
    scene = two.scene(["red_cube", "blue_cube", "bin"])
    assert not two.ground_goal("first the red cube, then the blue one, all for the bin", scene)  # which skill: not said
    assert two.ground_goal("push the red cube towards the bin", scene) == Goal((("near", "red_cube", "bin"),), False)


def test_mentions_stay_inside_their_noun_phrase(domain):
    scene = domain.scene(["red_cube", "green_cube", "bin"])
    # "green" belongs to "bin" here, not to a cube.
    assert set(mentioned_objects("put the red cube in the green bin", scene)) == {"red_cube", "bin"}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (None, "missing"),
        ({"categories": {"cube": "movable"}}, "skills"),
        ({"categories": {"cube": "movable"}, "skills": {"grab": {"arguments": ["thing"], "instruction": "grab {0}", "effects": ["held({0})"]}}}, "arguments"),
        ({"categories": {"cube": "movable"}, "skills": {"grab": {"arguments": ["movable"], "instruction": "grab it", "effects": ["held({0})"]}}}, "must use each"),
        ({"categories": {"cube": "movable"}, "skills": {"grab": {"arguments": ["movable"], "instruction": "grab {0}", "effects": ["held({1})"]}}}, "refers past"),
        ({"categories": {"cube": "movable"}, "skills": {"grab": {"arguments": ["movable"], "instruction": "grab {0}", "effects": ["held(*)"]}}}, "wildcard"),
        ({"categories": {"cube": "movable"}, "skills": {"grab": {"arguments": ["movable"], "instruction": "grab {0}", "effects": ["os.system('x')"]}}}, "predicate"),
        ({"categories": {"cube": "movable"}, "skills": {"done": {"arguments": ["movable"], "instruction": "grab {0}", "effects": ["held({0})"]}}}, "other than 'done'"),
        ({"categories": {"cube": "movable"}, "skills": {"grab": {"arguments": ["movable"], "instruction": "grab {0}", "effects": ["held({0})"],
                                                              "instructions_by_count": {"count": "held(*)"}}}}, "instructions_by_count: expected"),
        ({"categories": {"cube": "movable"}, "skills": {"grab": {"arguments": ["movable"], "instruction": "grab {0}", "effects": ["held({0})"],
                                                              "instructions_by_count": {"count": "not held(*)", "instructions": ["grab {0}"]}}}}, "no 'not'"),
        ({"categories": {"cube": "movable"}, "skills": {"grab": {"arguments": ["movable"], "instruction": "grab {0}", "effects": ["held({0})"],
                                                              "instructions_by_count": {"count": "held({2})", "instructions": ["grab {0}"]}}}}, "refers past"),
        ({"categories": {"cube": "movable"}, "skills": {"grab": {"arguments": ["movable"], "instruction": "grab {0}", "effects": ["held({0})"],
                                                              "instructions_by_count": {"count": "held(*)", "instructions": ["grab it"]}}}}, r"instructions\[0\]: must use each"),
        ({"categories": {"cube": "movable"}, "skills": {"grab": {"arguments": ["movable"], "instruction": "grab {0}", "effects": ["held({0})"],
                                                              "instructions_by_count": {"count": "held(*)", "instructions": []}}}}, "non-empty strings"),
    ],
)
def test_bad_vocabulary_is_rejected_with_the_key(section, message):
    with pytest.raises(DomainError, match=message):
        load_domain(section)


def test_state_from_task_status_reads_only_finished_subtasks(domain, scene):
    instructions = ["put the blue cube in the bin", "put the red cube in the near end of the bin", "wave hello"]
    assert state_from_task_status(domain, scene, instructions, 0) == frozenset()
    assert state_from_task_status(domain, scene, instructions, 1) == {("in", "blue_cube", "bin")}
    assert state_from_task_status(domain, scene, instructions, 3) == {("in", "blue_cube", "bin"), ("in", "red_cube", "bin")}


def test_execution_advances_on_symbolic_state_and_skips_work_already_done(domain):
    run = PlanExecution(domain, (RED, GREEN, BLUE), ExecutionConfig(subtask_timeout_s=10.0), now_s=0.0)
    assert run.update(1.0, state=frozenset()).action == Action.CONTINUE
    decision = run.update(2.0, state=frozenset({("in", "red_cube", "bin"), ("in", "blue_cube", "bin")}))
    assert decision.action == Action.NEXT and run.current == GREEN and run.subtask_started_s == 2.0
    everything = frozenset({("in", f"{c}_cube", "bin") for c in ("red", "green", "blue")})
    assert run.update(3.0, state=everything).action == Action.DONE
    assert run.statuses == [Status.SUCCEEDED, Status.SUCCEEDED, Status.SKIPPED] and run.completed == 3


def test_execution_uses_progress_without_a_symbolic_state(domain):
    run = PlanExecution(domain, (RED, GREEN), ExecutionConfig(progress_done_threshold=0.9, progress_confirmations=2), now_s=0.0)
    assert run.update(1.0, progress=0.95).action == Action.CONTINUE  # one reading is not enough
    assert run.update(1.5, progress=0.5).action == Action.CONTINUE  # the streak restarts
    assert run.update(2.0, progress=0.92).action == Action.CONTINUE
    assert run.update(2.5, progress=0.97).action == Action.NEXT and run.current == GREEN and run.progress == 0.0


def test_execution_timeouts_replan_then_fail(domain):
    run = PlanExecution(domain, (RED,), ExecutionConfig(subtask_timeout_s=5.0, task_timeout_s=100.0, max_replans=1), now_s=0.0)
    decision = run.update(6.0, state=frozenset())
    assert decision.action == Action.REPLAN and "timed out" in decision.reason and run.statuses == [Status.FAILED]
    run.replace_plan((RED,), now_s=6.0)
    assert run.update(10.0, state=frozenset()).action == Action.CONTINUE
    decision = run.update(11.5, state=frozenset())
    assert decision.action == Action.FAIL and "no replans left" in decision.reason
    whole = PlanExecution(domain, (RED,), ExecutionConfig(subtask_timeout_s=50.0, task_timeout_s=20.0), now_s=0.0)
    assert whole.update(21.0).action == Action.FAIL


def test_execution_counts_completed_subtasks_across_replans(domain):
    run = PlanExecution(domain, (RED, GREEN), ExecutionConfig(subtask_timeout_s=5.0), now_s=0.0)
    assert run.update(1.0, state=frozenset({("in", "red_cube", "bin")})).action == Action.NEXT
    assert run.update(7.0, state=frozenset({("in", "red_cube", "bin")})).action == Action.REPLAN
    run.replace_plan((GREEN,), now_s=7.0)
    assert run.completed == 1
    assert run.update(8.0, success=True).action == Action.DONE and run.completed == 2


@pytest.mark.parametrize(("mode", "requester", "reason"), [
    ("HOLD", "operator", "hands off"), ("TELEOP", "teleop", "intervention"), ("HOLD", "safety_bridge", "watchdog inference_silent"),
    ("ESTOP", "estop_topic", "e-stop pressed"),
])
def test_a_mode_change_the_planner_did_not_ask_for_ends_the_task_without_a_replan(domain, mode, requester, reason):
    run = PlanExecution(domain, (RED, GREEN), ExecutionConfig(subtask_timeout_s=60.0, max_replans=5), now_s=0.0)
    decision = run.update(1.0, state=frozenset(), interruption=Interruption(mode, requester, reason))
    assert decision.action == Action.FAIL and run.statuses[0] == Status.FAILED
    assert decision.reason == f"stopped by {requester}: {mode} ({reason})"


def test_an_effect_undone_behind_the_plan_is_seen_and_replanned(domain):
    """A cube knocked out of the bin: what an earlier subtask achieved no longer holds."""
    red_in = frozenset({("in", "red_cube", "bin")})
    run = PlanExecution(domain, (RED, GREEN), ExecutionConfig(subtask_timeout_s=60.0, max_replans=2), now_s=0.0)
    assert run.update(1.0, state=red_in).action == Action.NEXT and run.completed_steps == [RED]
    assert run.update(2.0, state=red_in).action == Action.CONTINUE
    decision = run.update(3.0, state=frozenset())
    assert decision.action == Action.REPLAN and "in(red_cube, bin) no longer holds" in decision.reason
    run.replace_plan((RED, GREEN), now_s=3.0)
    assert run.update(4.0, state=frozenset()).action == Action.CONTINUE  # not reported twice


def test_a_stuck_subtask_is_replanned_before_its_timeout(domain):
    config = ExecutionConfig(subtask_timeout_s=60.0, stuck_window_s=10.0, stuck_progress_delta=0.05, progress_done_threshold=0.9)
    run = PlanExecution(domain, (RED,), config, now_s=0.0)
    decisions = [run.update(t, state=frozenset(), progress=0.3 + 0.001 * t) for t in range(0, 12)]
    assert [d.action for d in decisions[:10]] == [Action.CONTINUE] * 10
    assert decisions[11].action == Action.REPLAN and "stuck" in decisions[11].reason
    moving = PlanExecution(domain, (RED,), config, now_s=0.0)
    assert all(moving.update(t, state=frozenset(), progress=0.05 * t).action == Action.CONTINUE for t in range(0, 18))
    off = PlanExecution(domain, (RED,), ExecutionConfig(subtask_timeout_s=60.0), now_s=0.0)
    assert all(off.update(t, state=frozenset(), progress=0.3).action == Action.CONTINUE for t in range(0, 30))
