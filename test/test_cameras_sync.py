"""Approximate synchronisation of camera streams and the device-to-host clock mapping."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wam_ros.cameras.clock import DeviceClockMapper
from wam_ros.cameras.sync import ApproximateSync


def feed(sync: ApproximateSync, events: list[tuple[float, str, float]]) -> list:
    """events: (arrival order key, camera, stamp); returns every emitted set."""
    out = []
    for _, name, stamp in sorted(events):
        out.extend(sync.add(name, stamp, (name, stamp)))
    return out


def test_two_aligned_streams_pair_one_to_one():
    sync = ApproximateSync(["front", "wrist"], tolerance_s=0.01)
    events = [(t + 0.001 * (name == "wrist"), name, t + 0.002 * (name == "wrist")) for t in np.arange(0, 1, 1 / 30) for name in ("front", "wrist")]
    sets = feed(sync, events)
    assert len(sets) == 30
    assert all(s.spread_s == pytest.approx(0.002) for s in sets)
    assert sync.stats.dropped == {"front": 0, "wrist": 0}
    assert sets[0].items == {"front": ("front", 0.0), "wrist": ("wrist", 0.002)}


def test_missing_frame_drops_its_partner_and_counts_it():
    sync = ApproximateSync(["a", "b"], tolerance_s=0.005)
    stamps_a = [0.0, 0.1, 0.2, 0.3]
    stamps_b = [0.0, 0.2, 0.3]  # b lost its 0.1 frame
    events = [(t, "a", t) for t in stamps_a] + [(t + 0.01, "b", t) for t in stamps_b]
    sets = feed(sync, events)
    assert [s.stamps_s["a"] for s in sets] == [0.0, 0.2, 0.3]
    assert sync.stats.dropped == {"a": 1, "b": 0}
    assert sync.pending("a") == sync.pending("b") == 0


def test_different_rates_pair_each_slow_frame_with_the_nearest_fast_one():
    sync = ApproximateSync(["fast", "slow"], tolerance_s=0.008)
    events = [(t, "fast", t) for t in np.arange(0, 1.0, 1 / 60)] + [(t + 0.02, "slow", t + 0.003) for t in np.arange(0, 1.0, 1 / 15)]
    sets = feed(sync, events)
    assert len(sets) == 15
    assert max(s.spread_s for s in sets) <= 0.008
    assert sync.stats.dropped["slow"] == 0 and sync.stats.dropped["fast"] >= 40


def test_stalled_camera_bounds_the_other_queue():
    sync = ApproximateSync(["a", "b"], tolerance_s=0.01, max_queue=5)
    for i in range(20):
        assert sync.add("a", i * 0.033, i) == []
    assert sync.pending("a") == 5 and sync.stats.dropped["a"] == 15


def test_out_of_order_stamp_is_rejected_not_queued():
    sync = ApproximateSync(["a", "b"], tolerance_s=0.01)
    sync.add("a", 1.0, "first")
    assert sync.add("a", 0.5, "late") == [] and sync.add("a", 1.0, "again") == []
    assert sync.stats.rejected["a"] == 2 and sync.pending("a") == 1


def test_bad_input_gives_clear_errors():
    sync = ApproximateSync(["a", "b"], tolerance_s=0.01)
    with pytest.raises(KeyError, match="unknown camera 'c'"):
        sync.add("c", 0.0, None)
    with pytest.raises(ValueError, match="finite"):
        sync.add("a", math.nan, None)
    with pytest.raises(ValueError, match="distinct"):
        ApproximateSync(["a", "a"], 0.01)
    with pytest.raises(ValueError, match="tolerance_s"):
        ApproximateSync(["a"], -1.0)
    assert sync.stats.received == {"a": 0, "b": 0}  # rejected input left no trace


def test_stats_as_key_values_for_diagnostics():
    sync = ApproximateSync(["a", "b"], tolerance_s=0.01)
    sync.add("a", 0.0, 1)
    sync.add("b", 0.004, 2)
    values = sync.stats.as_key_values()
    assert values["matched_sets"] == "1" and values["spread_ms_max"] == "4.00" and values["b.dropped"] == "0"


streams = st.lists(
    st.tuples(st.floats(5, 60), st.floats(0, 0.02), st.floats(0, 0.3)),  # rate, jitter, drop probability
    min_size=2, max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(streams=streams, tolerance_s=st.floats(0.0, 0.05), seed=st.integers(0, 2**16))
def test_sets_are_valid_and_every_frame_is_accounted_for(streams, tolerance_s, seed):
    rng = np.random.default_rng(seed)
    names = [f"cam{i}" for i in range(len(streams))]
    sync = ApproximateSync(names, tolerance_s, max_queue=10)
    events = []
    for name, (rate, jitter, drop) in zip(names, streams):
        stamps = np.arange(0.0, 2.0, 1.0 / rate) + rng.uniform(0, jitter)
        for stamp in stamps:
            if rng.random() >= drop:
                events.append((stamp + rng.uniform(0, 0.05), name, float(stamp)))
    sets = feed(sync, events)
    seen = set()
    for synced in sets:
        assert synced.spread_s <= tolerance_s + 1e-12
        assert set(synced.items) == set(names)
        for name, item in synced.items.items():
            assert item not in seen  # every frame is used at most once
            seen.add(item)
    for name in names:  # stamps of one camera increase from set to set
        stamps = [s.stamps_s[name] for s in sets]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    stats = sync.stats
    for name in names:
        assert stats.received[name] == stats.matched_sets + stats.dropped[name] + stats.rejected[name] + sync.pending(name)


@settings(max_examples=100, deadline=None)
@given(period_s=st.floats(0.01, 0.1), tolerance_fraction=st.floats(0.05, 0.49), jitter_fraction=st.floats(0, 0.2),
       seed=st.integers(0, 2**16))
def test_tolerance_below_half_a_period_matches_every_frame(period_s, tolerance_fraction, jitter_fraction, seed):
    """Same-rate cameras whose relative offset stays inside the tolerance: nothing is dropped."""
    rng = np.random.default_rng(seed)
    tolerance_s = tolerance_fraction * period_s
    names = ["a", "b", "c"]
    sync = ApproximateSync(names, tolerance_s)
    events = []
    latency_s = {name: rng.uniform(0, 2 * period_s) for name in names}  # per camera: frames arrive in order
    for i in range(40):
        for name in names:
            stamp = i * period_s + rng.uniform(0, jitter_fraction * tolerance_s)
            events.append((stamp + latency_s[name] + rng.uniform(0, 0.4 * period_s), name, stamp))
    sets = feed(sync, events)
    assert len(sets) == 40 and sync.stats.dropped == {n: 0 for n in names}


def test_clock_mapper_keeps_device_spacing_and_removes_arrival_jitter():
    rng = np.random.default_rng(0)
    mapper = DeviceClockMapper(window_s=10.0)
    device = 100.0 + np.arange(300) / 30.0
    true_offset = 1_700_000_000.0
    delay = 0.004 + rng.exponential(0.003, device.size)
    host = [mapper.to_host(d, d + true_offset + x) for d, x in zip(device, delay)]
    spacing = np.diff(host[30:])
    assert np.allclose(spacing, 1 / 30, atol=0.0011)  # only improvements of the min-delay estimate move stamps
    error = np.array(host) - (device + true_offset)
    assert np.all(error >= 0.004 - 1e-9) and np.all(error[30:] <= 0.0045)  # min delay is 4 ms
    assert mapper.resets == 0


@settings(max_examples=60, deadline=None)
@given(drift_ppm=st.floats(-200, 200), seed=st.integers(0, 2**16))
def test_clock_mapper_follows_drift_within_the_window_bound(drift_ppm, seed):
    rng = np.random.default_rng(seed)
    window_s = 5.0
    mapper = DeviceClockMapper(window_s=window_s)
    host_true = 50.0 + np.arange(0, 120.0, 1 / 30)  # two minutes at 30 Hz
    device = 7.0 + (host_true - 50.0) * (1 + drift_ppm * 1e-6)
    delay = 0.002 + rng.exponential(0.002, host_true.size)
    host = np.array([mapper.to_host(d, h + x) for d, h, x in zip(device, host_true, delay)])
    error = host[300:] - host_true[300:]
    # Minimum delay is 2 ms; drift adds at most |drift| * window (plus sampling of the minimum).
    assert np.all(error > 0.0) and np.all(error < 0.002 + abs(drift_ppm) * 1e-6 * window_s + 0.003)
    assert np.all(np.diff(host) > 0)
    assert mapper.resets == 0


def test_clock_mapper_resynchronises_after_a_device_clock_jump():
    mapper = DeviceClockMapper(window_s=10.0, resync_threshold_s=0.5)
    for i in range(30):
        mapper.to_host(10.0 + i / 30, 1000.0 + i / 30 + 0.005)
    # Device reconnected: its clock restarted near zero.
    stamp = mapper.to_host(0.2, 1002.0 + 0.005)
    assert mapper.resets == 1 and stamp == pytest.approx(1002.005)
    # Host clock stepped forward by 3 s (NTP): re-synchronised as well.
    stamp = mapper.to_host(0.2 + 1 / 30, 1005.0 + 1 / 30 + 0.005)
    assert mapper.resets == 2 and stamp == pytest.approx(1005.0 + 1 / 30 + 0.005)
    with pytest.raises(ValueError, match="finite"):
        mapper.to_host(math.inf, 1.0)
