"""Observation assembly and real-time chunking, without ROS."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wam_ros.inference.chunking import LatencyEstimator, TimedChunk, boundary_jump, follows, frozen_prefix, join
from wam_ros.inference.observations import NotReady, Observation, ObservationAssembler


def make_assembler(**overrides) -> ObservationAssembler:
    settings_ = dict(cameras=["front", "wrist"], n_frames=2, frame_spacing_s=0.1, sync_tolerance_s=0.02, max_input_age_s=0.3)
    settings_.update(overrides)
    return ObservationAssembler(**settings_)


def feed(assembler: ObservationAssembler, t_end: float, camera_rate_hz: float = 10.0, offsets=None) -> None:
    offsets = offsets or {}
    for camera in assembler.cameras:
        for t in np.arange(0.0, t_end + 1e-9, 1.0 / camera_rate_hz):
            stamp = round(t + offsets.get(camera, 0.0), 6)
            assembler.add_image(camera, stamp, np.full((4, 4, 3), int(stamp * 100) % 255, np.uint8))
    for t in np.arange(0.0, t_end + 1e-9, 0.004):
        assembler.add_state(round(t, 6), np.full(8, t, np.float32))


def test_assembles_history_at_frame_spacing():
    assembler = make_assembler()
    feed(assembler, 1.0)
    observation = assembler.assemble(now_s=1.05)
    assert isinstance(observation, Observation)
    assert observation.stamp_s == pytest.approx(1.0)
    assert observation.images["front"].shape == (2, 4, 4, 3)
    assert observation.frame_stamps_s["wrist"] == pytest.approx([0.9, 1.0])
    np.testing.assert_allclose(observation.state[:, 0], [0.9, 1.0], atol=0.004)


def test_pairs_cameras_within_tolerance_and_refuses_beyond():
    assembler = make_assembler()
    feed(assembler, 1.0, offsets={"wrist": 0.015})
    assert isinstance(assembler.assemble(1.05), Observation)
    assembler = make_assembler()
    feed(assembler, 1.0, offsets={"wrist": 0.05})
    result = assembler.assemble(1.1)
    assert isinstance(result, NotReady) and "within 0.020 s" in result.reason


def test_missing_and_stale_inputs_are_named():
    assembler = make_assembler()
    result = assembler.assemble(0.0)
    assert isinstance(result, NotReady) and result.input == "front" and "no message" in result.reason
    feed(assembler, 1.0)
    result = assembler.assemble(now_s=2.0)
    assert isinstance(result, NotReady) and "stale" in result.reason
    assembler = make_assembler()
    for t in np.arange(0.0, 1.0, 0.1):
        assembler.add_image("front", t, np.zeros((4, 4, 3), np.uint8))
        assembler.add_image("wrist", t, np.zeros((4, 4, 3), np.uint8))
    result = assembler.assemble(1.0)
    assert isinstance(result, NotReady) and result.input == "joint_states"


def test_unknown_camera_is_refused():
    with pytest.raises(KeyError, match="unknown camera"):
        make_assembler().add_image("side", 0.0, np.zeros((2, 2, 3), np.uint8))


def test_time_going_backwards_restarts_history():
    assembler = make_assembler()
    feed(assembler, 1.0)
    assembler.add_image("front", 0.05, np.zeros((4, 4, 3), np.uint8))  # sim reset: time jumps back
    assert len(assembler._images["front"].stamps) == 1


def test_frozen_prefix_matches_the_executing_chunk():
    actions = np.stack([np.arange(16.0), -np.arange(16.0)], axis=1)
    current = TimedChunk(stamp_s=10.0, period_s=0.1, actions=actions)
    prefix = frozen_prefix(current, obs_stamp_s=10.8, period_s=0.1, start_delay_s=0.15, horizon=16)
    # ceil(0.15 / 0.1) + 1 = 3 actions, at 10.8, 10.9, 11.0 -> current actions 8, 9, 10
    np.testing.assert_allclose(prefix, actions[8:11])
    assert frozen_prefix(None, 10.8, 0.1, 0.15, 16) is None
    assert frozen_prefix(current, 12.0, 0.1, 0.15, 16) is None  # the current chunk has run out


def test_boundary_jump_is_zero_for_a_continuing_chunk_and_measures_a_step():
    previous = TimedChunk(0.0, 0.1, np.linspace(0, 1.5, 16)[:, None])
    continuing = TimedChunk(0.8, 0.1, np.linspace(0.8, 2.3, 16)[:, None])
    assert boundary_jump(previous, continuing, switch_s=0.95) == pytest.approx(0.0, abs=1e-12)
    stepped = TimedChunk(0.8, 0.1, continuing.actions + 0.2)
    assert boundary_jump(previous, stepped, switch_s=0.95) == pytest.approx(0.2)
    assert boundary_jump(None, stepped, 0.95) == 0.0


@settings(max_examples=200, deadline=None)
@given(
    stamp=st.floats(0, 100),
    offset_steps=st.integers(0, 15),
    latency=st.floats(0.0, 1.0),
)
def test_frozen_prefix_is_continuous_with_the_current_chunk(stamp, offset_steps, latency):
    rng = np.random.default_rng(0)
    current = TimedChunk(stamp, 0.1, rng.normal(size=(16, 8)))
    obs = stamp + offset_steps * 0.1
    prefix = frozen_prefix(current, obs, 0.1, latency, 16)
    assert prefix is not None and 1 <= len(prefix) <= 15
    np.testing.assert_allclose(prefix[0], current.at(obs)[0])


def test_latency_estimator_uses_recent_high_quantile():
    estimator = LatencyEstimator(initial_s=0.5, window=10)
    assert estimator.estimate_s() == 0.5
    for value in [0.01] * 9 + [0.1]:
        estimator.add(value)
    assert 0.01 < estimator.estimate_s() <= 0.1
    assert estimator.percentile_ms(50) == pytest.approx(10.0)


@settings(max_examples=300, deadline=None)
@given(age=st.floats(0.0, 0.4), latency=st.floats(0.0, 0.6), period=st.sampled_from([0.05, 0.0667, 0.1]))
def test_frozen_prefix_covers_the_moment_the_chunk_takes_over(age, latency, period):
    """Sized from observation age + latency, the frozen part lasts until the new chunk arrives;
    sized from the latency alone (the old rule) it ended before that whenever the age exceeded a period."""
    current = TimedChunk(0.0, period, np.zeros((40, 8)))
    prefix = frozen_prefix(current, 0.2, period, age + latency, 40)
    assert (len(prefix) - 1) * period >= age + latency - 1e-9
    old = frozen_prefix(current, 0.2, period, latency, 40)
    if age > period:
        assert (len(old) - 1) * period < age + latency


def test_follows_only_while_the_arm_is_near_the_command():
    chunk = TimedChunk(1.0, 0.1, np.tile(np.r_[np.zeros(7), 0.08], (16, 1)))
    measured = np.r_[np.full(7, 0.05), 0.01]  # gripper far from its command: closed on a cube
    assert follows(chunk, 1.5, measured, 7, 0.1)
    assert not follows(chunk, 1.5, measured + np.r_[np.zeros(6), 0.2, 0.0], 7, 0.1)  # one joint elsewhere (a reset)
    assert not follows(chunk, 0.5, measured, 7, 0.1) and not follows(chunk, 3.0, measured, 7, 0.1)  # outside the chunk
    assert not follows(None, 1.5, measured, 7, 0.1)


@settings(max_examples=200, deadline=None)
@given(offset=st.floats(-1.0, 1.0), stamp_offset=st.floats(0.0, 0.7), blend=st.floats(0.1, 0.8), late=st.floats(0.0, 0.01),
       aligned=st.booleans())
def test_join_keeps_the_command_continuous_at_the_switch(offset, stamp_offset, blend, late, aligned):
    rng = np.random.default_rng(1)
    previous = TimedChunk(10.0, 0.1, np.cumsum(rng.normal(0, 0.02, (16, 8)), axis=0))
    stamp = 10.0 + (round(stamp_offset, 1) if aligned else stamp_offset)
    new = TimedChunk(stamp, 0.1, previous.at(stamp + 0.1 * np.arange(16)) + offset)  # the same plan, stepped by offset
    switch = stamp + 0.15
    joined = join(previous, new, switch, blend)
    step = np.max(np.abs(np.diff(previous.actions, axis=0)))  # interpolation between unaligned grids
    tolerance = 1e-9 if aligned else step
    assert boundary_jump(previous, new, switch) == pytest.approx(abs(offset), abs=tolerance)
    assert boundary_jump(previous, joined, switch) <= tolerance
    # Arriving a few ms late, the robot meets a blend that has barely started.
    assert boundary_jump(previous, joined, switch + late) <= tolerance + abs(offset) * (late / blend) + 1e-9
    # After the blend the new chunk is published unchanged.
    times = stamp + 0.1 * np.arange(16)
    first_after = times[times > switch][0]
    done = times >= first_after + blend
    np.testing.assert_allclose(joined.actions[done], new.actions[done])


def test_join_without_a_running_chunk_publishes_the_new_one():
    new = TimedChunk(5.0, 0.1, np.ones((16, 8)))
    assert join(None, new, 5.1, 0.3) is new
    assert join(TimedChunk(0.0, 0.1, np.zeros((16, 8))), new, 5.1, 0.3) is new  # the old one ran out long ago


def test_frames_pair_with_their_own_stamps_while_another_thread_adds_them():
    """The node's executor adds frames while its worker assembles (the race this lock closes)."""
    assembler = make_assembler(n_frames=1, max_input_age_s=10.0, sync_tolerance_s=0.0)
    stop = threading.Event()

    def value(stamp: float) -> int:
        return int(round(stamp * 1000)) % 251

    def write() -> None:
        t = 0.0
        while not stop.is_set():
            t = round(t + 0.001, 6)
            for camera in assembler.cameras:
                assembler.add_image(camera, t, np.full((2, 2, 3), value(t), np.uint8))
            assembler.add_state(t, np.full(8, t, np.float32))

    writer = threading.Thread(target=write)
    writer.start()
    mismatches, checked = [], 0
    try:
        while checked < 3000:
            observation = assembler.assemble(now_s=0.0)
            if isinstance(observation, NotReady):
                continue
            checked += 1
            for camera in assembler.cameras:
                stamp = observation.frame_stamps_s[camera][-1]
                if observation.images[camera][-1, 0, 0, 0] != value(stamp):
                    mismatches.append((camera, stamp))
    finally:
        stop.set()
        writer.join()
    assert not mismatches, f"{len(mismatches)} of {checked} observations paired a frame with another frame's stamp"


# -- the chunk stream (the node's logic without ROS) -------------------------------------------------
from wam_ros.inference.stream import ChunkStream, StreamSettings  # noqa: E402

STATE = np.zeros(8)


def stream(**changes) -> ChunkStream:
    settings = dict(dof=7, frame_period_s=0.1, blend_s=0.3)
    settings.update(changes)
    chunks = ChunkStream(StreamSettings(**settings), LatencyEstimator(0.05), "put the red cube in the bin")
    chunks.on_bridge_mode(True)
    return chunks


def answer(stamp: float, value: float) -> TimedChunk:
    return TimedChunk(stamp, 0.1, np.full((16, 8), value))


def publish(chunks: ChunkStream, stamp: float, value: float, now: float | None = None):
    request = chunks.request(stamp, STATE, stamp + 0.01, True, 16)
    sent: list[TimedChunk] = []
    return request, chunks.publish(request, answer(stamp, value), 8, now or stamp + 0.05, sent.append), sent


def test_a_new_subtask_with_the_same_instruction_restarts_the_stream():
    """Consecutive episodes with one instruction: nothing planned before the reset is frozen or blended."""
    chunks = stream()
    chunks.on_subtask("pick_place-1", 0, "put the red cube in the bin")
    publish(chunks, 1.0, 0.5)
    request = chunks.request(1.6, STATE, 1.61, True, 16)
    assert request.prefix is not None and request.previous is not None  # same episode: RTC and join apply
    assert chunks.on_subtask("pick_place-2", 0, "put the red cube in the bin")  # next episode, same words
    request = chunks.request(1.6, STATE, 1.61, True, 16)
    assert request.prefix is None and request.previous is None and request.new_episode
    assert not chunks.on_subtask("pick_place-2", 0, "put the red cube in the bin")  # a repeat changes nothing


def test_a_chunk_whose_request_straddles_a_subtask_change_is_dropped_with_its_own_label():
    chunks = stream()
    chunks.on_subtask("a", 0, "put the red cube in the bin")
    request = chunks.request(1.0, STATE, 1.01, True, 16)
    assert (request.subtask_id, request.instruction) == ("a", "put the red cube in the bin")  # fixed before the model call
    chunks.on_subtask("b", 1, "put the blue cube in the bin")  # arrives during the model call
    sent: list[TimedChunk] = []
    assert chunks.publish(request, answer(1.0, 0.5), 8, 1.05, sent.append) is None and not sent
    request = chunks.request(1.1, STATE, 1.11, True, 16)
    assert (request.subtask_id, request.instruction) == ("b", "put the blue cube in the bin")


def test_join_and_prefix_only_while_the_bridge_executes():
    chunks = stream()
    publish(chunks, 1.0, 0.5)
    chunks.on_bridge_mode(False)  # HOLD or IDLE: the arm does not follow the chunks
    request, published, sent = publish(chunks, 1.7, 0.9)
    assert request.previous is None and request.prefix is None and not published.joined and published.jump == 0.0
    np.testing.assert_allclose(sent[0].actions, 0.9)
    chunks.on_bridge_mode(True)
    request, published, sent = publish(chunks, 2.4, 0.1)
    assert published.joined and published.jump < 1e-9 and sent[0].actions[-1, 0] == pytest.approx(0.1)


def test_the_old_rtc_rule_gives_a_shorter_prefix_and_without_blending_the_jump_shows():
    old, new = stream(rtc_observation_age=False, blend_s=0.0), stream()
    for chunks in (old, new):
        publish(chunks, 1.0, 0.5)
    age = 0.15
    short = old.request(1.7, STATE, 1.7 + age, True, 16)
    long = new.request(1.7, STATE, 1.7 + age, True, 16)
    assert len(short.prefix) == math.ceil(0.05 / 0.1) + 1 and len(long.prefix) == math.ceil((age + 0.05) / 0.1) + 1
    sent: list[TimedChunk] = []
    assert old.publish(short, answer(1.7, 0.9), 8, 1.9, sent.append).jump == pytest.approx(0.4)


def test_fresh_frame_window_and_deadline():
    chunks = stream(frame_period_s=0.1)
    assert chunks.start_now(0.0, None)  # no chunk yet: at once
    publish(chunks, 1.0, 0.5)  # due at 1.0 + 8 * 0.1 - latency
    due = 1.8 - chunks.latency.estimate_s()
    assert not chunks.start_now(due - 0.15, 1.6)
    assert not chunks.start_now(due - 0.05, 1.7)  # the window opens; this frame is the anchor
    assert not chunks.start_now(due - 0.04, 1.7)
    assert chunks.start_now(due - 0.03, 1.8)  # a fresh frame inside the window
    assert chunks.start_now(due, 1.7)  # the deadline, whatever the frames
    at_deadline = stream(fresh_frame_trigger=False)  # the rule before 2026-12
    publish(at_deadline, 1.0, 0.5)
    assert not at_deadline.start_now(due - 0.05, 1.7) and not at_deadline.start_now(due - 0.03, 1.8) and at_deadline.start_now(due, 1.8)


def test_time_going_back_restarts_and_jumps_stay_bounded():
    chunks = stream()
    for k in range(250):
        publish(chunks, 1.0 + 0.8 * k, 0.5)
    assert len(chunks.jumps) == 200
    request = chunks.request(0.5, STATE, 0.51, True, 16)  # sim reset: time went back
    assert request is not None and request.previous is None and request.new_episode


def test_a_chunk_that_reaches_the_bridge_late_still_meets_no_step():
    chunks = stream(delivery_margin_s=0.1)
    publish(chunks, 1.0, 0.5)
    request = chunks.request(1.7, STATE, 1.71, True, 16)
    sent: list[TimedChunk] = []
    published = chunks.publish(request, answer(1.7, 0.9), 8, 1.75, sent.append)
    executing = answer(1.0, 0.5)
    for delay in (0.0, 0.03, 0.08):  # delivered to the bridge this long after publishing
        assert boundary_jump(executing, published.chunk, 1.75 + delay) < 1e-9


def test_a_chunk_requested_before_autonomy_joins_the_chunk_the_bridge_took_meanwhile():
    chunks = stream()
    chunks.on_bridge_mode(False)
    publish(chunks, 1.0, 0.5)  # computed in IDLE
    request = chunks.request(1.1, STATE, 1.11, True, 16)
    assert request.previous is None  # not executed when asked
    chunks.on_bridge_mode(True)  # AUTONOMY starts during the request: the bridge runs the chunk at 1.0
    sent: list[TimedChunk] = []
    published = chunks.publish(request, answer(1.1, 0.9), 8, 1.2, sent.append)
    assert published.joined and published.jump < 1e-9
