"""bench/: the LibriSpeech-like mix, the two batch plans, the harness's step planning, and the PyTorch twin's shape.

Figures (speed, memory) are the benchmark's output, never asserted here."""
import json
import os

import numpy as np
import pytest

from bench import corpus, harness, train_speed
from ds2.batching import BatchSampler
from ds2.config import load_config
from ds2.shapes import input_frames


def test_duration_mix_is_librispeech_like():
    durations = corpus.librispeech_like_durations(20000, seed=1)
    assert 12.4 < durations.mean() < 13.0          # train-clean-100: 100.6 h / 28,539 utterances
    assert durations.min() >= 1.0 and durations.max() <= 35.0
    assert 0.6 < np.mean((durations > 11) & (durations < 17.5)) < 0.9
    # deterministic per (count, seed): every run of the benchmark trains on the same corpus
    assert np.array_equal(corpus.librispeech_like_durations(50, 3), corpus.librispeech_like_durations(50, 3))


@pytest.fixture
def corpus_frames():
    cfg = load_config("small")
    durations = corpus.librispeech_like_durations(1000, seed=2)
    return cfg, np.array([input_frames(int(d * 16000), cfg.features) for d in durations])


def test_plans_use_every_utterance_once(corpus_frames):
    cfg, frames = corpus_frames
    bucketed = harness.sampler_batches(BatchSampler.from_config(frames, cfg, seed=1))
    for plan in (bucketed, train_speed.pad_to_longest_plan(frames, 5, seed=1)):
        used = sorted(i for indices, _ in plan for i in indices)
        assert used == list(range(len(frames)))
        assert all(frames[indices].max() <= width for indices, width in plan)


def test_padding_share_counts_padded_frames():
    frames = np.array([10, 20, 30, 40])
    assert train_speed.padding_share([([0, 1], 20), ([2, 3], 40)], frames) == pytest.approx(20 / 120)
    assert train_speed.padding_share([([0], 10), ([1], 20)], frames) == 0.0


def test_bucketed_plan_pads_far_less_than_pad_to_longest(corpus_frames):
    cfg, frames = corpus_frames
    bucketed = train_speed.padding_share(harness.sampler_batches(BatchSampler.from_config(frames, cfg, seed=1)), frames)
    longest = train_speed.padding_share(train_speed.pad_to_longest_plan(frames, 5, seed=1), frames)
    assert bucketed < 0.06 < 0.15 < longest


def test_step_budget_stops_at_its_seconds_within_its_step_bounds():
    budget = harness.StepBudget(seconds=10.0, min_steps=2, max_steps=5)
    assert not budget.done(1, 50.0)                 # at least min_steps, however long they took
    assert budget.done(2, 10.0) and not budget.done(2, 9.9)
    assert budget.done(5, 0.1)                      # at most max_steps, however short
    assert harness.StepBudget.exactly(3) == harness.StepBudget(0.0, 3, 3)


def test_step_counts_follow_the_model_size_not_the_preset_name():
    """A larger model's steps take longer: within the same seconds it times fewer of them. A preset the
    harness has never seen (here: the small one made wider) is planned the same way."""
    budgets = {}
    for name, overrides in (("small", []), ("wider", ["model.rnn_hidden=1024", "model.rnn_layers=5"]),
                            ("seed", [])):
        cfg = load_config("seed" if name == "seed" else "small", overrides=overrides)
        plan = harness.epoch_plan(cfg, seed=7)
        budgets[name] = harness.StepBudget.for_run(cfg, plan.batches, plan.frames, limit_gflops=200.0,
                                                   seconds=60.0)
    assert budgets["small"].max_steps == 24                      # short steps: the cap
    assert budgets["seed"].max_steps < budgets["wider"].max_steps < budgets["small"].max_steps
    assert budgets["seed"].max_steps == 2                        # about 35 s steps: the floor
    assert all(b.seconds == 60.0 and b.min_steps == 2 for b in budgets.values())


def test_draw_is_the_same_for_every_run_with_the_same_seed():
    batches = [([i], 10 + i) for i in range(50)]
    assert harness.drawn(batches, 3) == harness.drawn(batches, 3)
    assert sorted(harness.drawn(batches, 3)) == batches and harness.drawn(batches, 3) != harness.drawn(batches, 4)


@pytest.mark.parametrize("preset", ["small", "seed"])
def test_torch_twin_has_the_same_parameters_as_ds2(preset):
    """Same layers and sizes: the same number of trainable parameters, the same output shape."""
    torch = pytest.importorskip("torch")
    from bench.torch_ds2 import TorchDeepSpeech2
    from ds2.model import DeepSpeech2, count_parameters

    cfg = load_config(preset)
    twin = TorchDeepSpeech2(cfg.model, cfg.features.n_bins)
    twin_count = sum(p.numel() for p in twin.parameters() if p.requires_grad)
    assert twin_count == count_parameters(DeepSpeech2(cfg.model, cfg.features.n_bins))
    if preset == "small":
        twin.eval()
        with torch.no_grad():
            log_probs, lengths = twin(torch.randn(2, 1, cfg.features.n_bins, 203), torch.tensor([203, 150]))
        from ds2.shapes import output_lengths
        assert lengths.tolist() == [output_lengths(203, cfg.model), output_lengths(150, cfg.model)]
        assert log_probs.shape == (output_lengths(203, cfg.model), 2, len(cfg.model.labels))


def test_planned_runs_leave_the_presets_shapes_alone_unless_asked():
    # A run without --shapes once passed "train.shapes=" (empty) to ds2 and `make bench` failed.
    pythons = ["/venv-a/bin/python", "/venv-b/bin/python"]
    assert train_speed.planned_runs(["mindspore", "torch"], [], pythons) == [
        {"framework": "mindspore", "overrides": []},
        {"framework": "torch", "overrides": [], "python": pythons[0]},
        {"framework": "torch", "overrides": [], "python": pythons[1]}]
    assert [run["overrides"] for run in train_speed.planned_runs(["torch", "mindspore"], ["static", "dynamic"],
                                                                 pythons[:1])] == [
        ["train.shapes=static"], ["train.shapes=dynamic"], []]           # ds2 first: PyTorch trains its steps


def test_pytorch_trains_ds2s_steps_or_a_prefix_once_it_has_spent_twice_ds2s_seconds():
    ds2 = {"budget": {"seconds": 180.0, "min_steps": 2, "max_steps": 6}, "steps": 5}
    torch_run = {"framework": "torch", "overrides": [], "python": "/venv/bin/python"}
    budget = train_speed.budget_for(torch_run, None, None, 200.0, train_speed.FULL, 0, ds2)
    assert budget == harness.StepBudget(360.0, 2, 5)
    assert train_speed.budget_for(torch_run, None, None, 200.0, train_speed.FULL, 3, ds2) == harness.StepBudget.exactly(3)


def test_heap_trace_names_each_blocks_owner_from_its_stack():
    from bench.heap_trace import parse_report, summarize
    report = "\n".join([
        "BLOCK 1073741824 104857600",
        "libmindspore_memory_pool.so(_ZN9mindspore6device21DynamicMemPoolBestFit10InitializeEmmm+0x1e3)[0x1]",
        "BLOCK 645922816 128974848",
        "libdnnl.so.2(+0x2d2ea2)[0x2]", "libdnnl.so.2(dnnl_primitive_create+0x23e)[0x3]",
        "BLOCK 645922816 128974848",
        "libdnnl.so.2(+0x2d2ea2)[0x2]", "libdnnl.so.2(dnnl_primitive_create+0x23e)[0x3]",
        "BLOCK 16777216 16777216", "libdnnl.so.2(+0x12)[0x4]", "libmindspore_ops_cpu.so(+0x128fde2)[0x5]",
        "BLOCK 64339968 64339968", "libmindspore_ms_backend.so(_ZNSt6vectorImSaImEE17_M_default_appendEm+0xee)[0x6]",
        "BLOCK 16777216 16777216", "_multiarray_umath.cpython-39-x86_64-linux-gnu.so(+0x2c06f)[0x7]",
        "BLOCK 2097152 0", "python(PyObject_Malloc+0xcb)[0x8]",
    ])
    summary = summarize(parse_report(report))
    owners = {name: (row["blocks"], row["resident"]) for name, row in summary["owners"].items()}
    assert owners == {"memory pool": (1, 104857600), "oneDNN scratchpads": (2, 2 * 128974848),
                      "oneDNN other": (1, 16777216), "index vectors": (1, 64339968),
                      "NumPy arrays": (1, 16777216), "other": (1, 0)}
    assert summary["scratchpads_mib"] == [{"count": 2, "mib": 616, "resident_mib": 123}]


def test_op_profile_reads_the_profilers_type_table_and_sums_the_rest(tmp_path):
    from bench.op_profile import format_table, read_op_types
    table = tmp_path / "run_ascend_ms" / "FRAMEWORK" / "cpu_op_type_info_0.csv"
    table.parent.mkdir(parents=True)
    table.write_text("op_type,type_occurrences,execution_frequency(per-step),total_compute_time,avg_time(ms),percent\n"
                     "Mul,138,138,150.0,1.08,0.004\nLSTMGrad,10,10,1600.0,160.0,0.45\nLSTM,10,10,800.0,80.0,0.25\n"
                     "Adam,59,59,50.0,0.84,0.004\n")
    rows = read_op_types(tmp_path)
    assert [r["op"] for r in rows] == ["LSTMGrad", "LSTM", "Mul", "Adam"]
    text = format_table(rows, wall_seconds=3.0, top=2)
    assert "LSTMGrad" in text and "61.5 %" in text                      # 1600 of 2600 ms
    assert "2 other types" in text and "197" in text and "200" in text  # Mul + Adam: 197 calls, 200 ms
    assert "operators' sum 2.60 s of 3.00 s wall" in text


def test_shape_memory_turns_page_faults_into_memory_touched_fresh(monkeypatch):
    import resource
    from bench.shape_memory import fault_summary
    monkeypatch.setattr(resource, "getpagesize", lambda: 4096)
    text = fault_summary({"pass2_minor_faults_per_step": 1_100_000.0, "pass2_system_cpu_s_per_step": 4.25})
    assert text == "1.10 M minor page faults (4.20 GiB touched fresh), 4.25 s CPU in the kernel"


def test_shape_memory_variant_env_items_set_the_runs_environment_not_its_config():
    from bench.shape_memory import variant_env, variant_name
    text = "train.shapes=dynamic,env:MALLOC_CONF=oversize_threshold:0,env:LD_PRELOAD=/lib/libjemalloc.so.2"
    assert variant_env(text) == {"MALLOC_CONF": "oversize_threshold:0", "LD_PRELOAD": "/lib/libjemalloc.so.2"}
    assert variant_env("train.shapes=dynamic") == {}
    assert variant_name(text) == "train.shapes=dynamic,env:MALLOC_CONF,env:LD_PRELOAD"


def test_onednn_lstm_compares_the_seeds_bilstm_layer_shape():
    from bench.onednn_lstm import layer_shape
    # seed: 1428 input frames -> 714 steps (time stride 2); BiLSTM layers 2..5 take H inputs
    assert layer_shape("seed", 1428, 11) == (714, 11, 1024, 1024)
    assert layer_shape("small", 1428, 8) == (357, 8, 192, 192)      # the small model strides time by 4


def onednn_library() -> str:
    from ds2.kernels import library_path, missing_reason
    problem = missing_reason("train.lstm_kernel")
    if problem is not None:
        if os.environ.get("DS2_IMAGE_FLAVOR") == "cpu":
            pytest.fail(f"the CPU image must carry the operators: {problem}")
        pytest.skip("ds2's native library is built in the CPU image")
    return str(library_path())


@pytest.mark.slow
def test_onednn_lstm_op_gives_the_kernels_loss_and_gradients():
    from bench.onednn_lstm_op import SMALL_SHAPE, compare, onednn_direction
    assert compare(SMALL_SHAPE, onednn_direction(onednn_library()))


@pytest.mark.slow
def test_onednn_lstm_op_check_finds_a_direction_that_drops_a_bias():
    from bench.onednn_lstm_op import SMALL_SHAPE, compare, onednn_direction
    run = onednn_direction(onednn_library())

    def without_hidden_bias(x, w_ih, w_hh, b_ih, b_hh):
        return run(x, w_ih, w_hh, b_ih, b_hh * 0)

    assert not compare(SMALL_SHAPE, without_hidden_bias)


def test_kernel_ab_check_flags_a_gradient_off_by_more_than_float32_tolerance():
    from bench.kernel_ab import compare
    reference = {"loss": np.float32(850.0), "w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)}
    assert all(row["ok"] for row in compare(reference, dict(reference)))
    nudged = dict(reference, w=reference["w"] + np.float32(1e-3))
    assert [row["ok"] for row in compare(reference, nudged)] == [True, False]
    assert not compare(reference, {"loss": reference["loss"]})[1]["ok"]          # a gradient missing
    assert not compare(reference, dict(reference, w=reference["w"][:2]))[1]["ok"]  # or of another shape
    # A gradient that is rounding noise around 0 (far below the largest) is judged against the largest.
    noise = dict(reference, b=np.float32([1e-5, -2e-5]))
    assert all(row["ok"] for row in compare(noise, dict(noise, b=np.float32([-3e-5, 1e-5]))))
    assert not compare(noise, dict(noise, b=np.float32([1e-2, 0])))[2]["ok"]


@pytest.mark.slow
def test_kernel_ab_gives_the_models_loss_and_gradients_on_the_small_preset():
    from bench.kernel_ab import check, kernel_setting
    onednn_library()
    assert kernel_setting("conv", "ds2") == ["train.conv_kernel=onednn"]
    assert kernel_setting("all", "builtin") == ["train.lstm_kernel=builtin", "train.conv_kernel=builtin",
                                                "train.ctc_kernel=builtin", "train.batch_norm_kernel=builtin",
                                                "train.mask_kernel=builtin"]
    rows = check("small", [], seed=7)   # every operator against every builtin kernel
    assert len(rows) == 30 and all(row["ok"] for row in rows), [r for r in rows if not r["ok"]]


def test_pair_ratios_compare_each_cycles_second_run_with_its_first(tmp_path):
    from bench.harness import pair_ratios, write_record
    run = {"audio_seconds_per_second": 10.0, "peak_gib": 2.0}
    results = {"a (1)": dict(run, pass2_cpu_s_per_step=4.0), "b (1)": dict(run, audio_seconds_per_second=12.0,
                                                                           pass2_cpu_s_per_step=3.0),
               "a (2)": run, "b (2)": dict(run, peak_gib=3.0)}
    assert pair_ratios(results) == ["b (1) / a (1): speed 1.20x, CPU time per step 0.75x, peak memory 1.00x",
                                     "b (2) / a (2): speed 1.00x, peak memory 1.50x"]
    written = write_record(str(tmp_path / "new" / "ab.json"), {"preset": "small", "results": results})
    record = json.loads(written.read_text())
    assert record["preset"] == "small" and record["results"] == results
    assert "command" in record and len(record["load_average_1_5_15_min"]) == 3
