"""Sizes for symbolic dims in `tritc verify`, `bench` and `compile`: the default 4 (1 for compile) where the model
admits it, sizes the model records, else the smallest that fit (found by specialising without LLVM), else a one-line
refusal naming the dims and --shape. Image models where 4x4 cannot work: a YOLO-like detector and a PP-OCR-like
recogniser, built here with onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tritc.codegen.llvm.sizes import MAX_SIZE, candidate_sizes, choose_sizes, misfit, smallest_fit
from tritc.errors import OptionError
from tritc.frontend.metadata import metadata_of, recorded_sizes
from tritc.frontend.onnx import import_model
from tritc.ir.types import DType, TensorType

from .test_cli_compile import assert_user_error, call

F = TensorProto.FLOAT


def _weight(name: str, *shape: int, seed: int) -> onnx.TensorProto:
    return numpy_helper.from_array((np.random.default_rng(seed).standard_normal(shape) * 0.3).astype(np.float32), name)


def _model(name: str, nodes: list, inputs: list, inits: list, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    g = helper.make_graph(nodes, name, inputs, [helper.make_tensor_value_info("out", F, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    for k, v in (metadata or {}).items():
        m.metadata_props.add(key=k, value=v)
    return m


def yolo_like(metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """images[batch,3,height,width] -> three 3x3 stride-2 convs (/2, /4, /8) -> Resize x2 (/4) -> Concat with the /4
    map -> 1x1 conv. The upsampled map matches the /4 one only when height and width are multiples of 8."""
    conv = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["images", "w1"], ["c1"], **conv), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], **conv), helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["c3"], **conv),
             helper.make_node("Resize", ["c3", "", "scales"], ["up"], mode="nearest", name="upsample"),
             helper.make_node("Concat", ["up", "r2"], ["cat"], axis=1, name="cat"),
             helper.make_node("Conv", ["cat", "w4"], ["out"], kernel_shape=[1, 1])]
    inits = [_weight("w1", 8, 3, 3, 3, seed=1), _weight("w2", 16, 8, 3, 3, seed=2), _weight("w3", 16, 16, 3, 3, seed=3),
             _weight("w4", 4, 32, 1, 1, seed=4), numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    images = helper.make_tensor_value_info("images", F, ["batch", 3, "height", "width"])
    return _model("yolo_like", nodes, [images], inits, metadata)


def ocr_like() -> onnx.ModelProto:
    """x[batch,3,8,width] (fixed height, as PP-OCR's recogniser) -> 3x3 stride-2 conv -> 3x3 stride-2 max pool ->
    1x3 conv along the width: the width must be at least 13."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], name="pool"),
             helper.make_node("Conv", ["p1", "w2"], ["out"], kernel_shape=[1, 3])]
    x = helper.make_tensor_value_info("x", F, ["batch", 3, 8, "width"])
    return _model("ocr_like", nodes, [x], [_weight("w1", 8, 3, 3, 3, seed=5), _weight("w2", 6, 8, 1, 3, seed=6)])


def unsatisfiable() -> onnx.ModelProto:
    """x[n,3] reshaped to [7,11]: no n makes 3n = 77."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["out"], name="reshape")]
    x = helper.make_tensor_value_info("x", F, ["n", 3])
    return _model("unsatisfiable", nodes, [x], [numpy_helper.from_array(np.array([7, 11], np.int64), "shape")])


def save(tmp_path: Path, m: onnx.ModelProto, name: str = "m.onnx") -> str:
    path = tmp_path / name
    path.write_bytes(m.SerializeToString())
    return str(path)


def shapes_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("shapes"))


# ---- verify and bench -------------------------------------------------------------------------------------------


def test_verify_finds_sizes_for_a_yolo_like_model(tmp_path):
    src = save(tmp_path, yolo_like())
    code, out, err = call("verify", src, "-q")
    assert code == 0, out + err
    assert shapes_line(out) == (
        "shapes     batch=1 (smallest that fits), height=8 (smallest that fits), width=8 (smallest that fits); "
        "batch=4, height=4, width=4 do not fit: node 'cat' (concat): concat inputs [4,16,2,2], [4,16,1,1] differ "
        "in dim 2 (concatenating on axis 1)")
    assert "input      images: f32[1,3,8,8] random normal" in out
    assert out.splitlines()[-1].startswith("PASS: 1 output within tolerance of onnxruntime")


def test_verify_keeps_given_sizes_and_searches_the_rest(tmp_path):
    src = save(tmp_path, yolo_like())
    code, out, err = call("verify", src, "--shape", "batch=2,width=24", "-q")
    assert code == 0, out + err
    assert shapes_line(out).startswith("shapes     batch=2, height=8 (smallest that fits), width=24; height=4 does not fit")
    assert "images: f32[2,3,8,24]" in out


def test_verify_finds_sizes_for_an_ocr_like_model(tmp_path):
    src = save(tmp_path, ocr_like())
    code, out, err = call("verify", src, "-q")
    assert code == 0, out + err
    line = shapes_line(out)
    assert line.startswith("shapes     batch=1 (smallest that fits), width=16 (smallest that fits); batch=4, width=4 do "
                           "not fit: node 'pool' (max_pool): window of extent 3 does not fit"), line
    assert out.splitlines()[-1].startswith("PASS")


def test_verify_uses_the_sizes_the_model_records(tmp_path):
    """Ultralytics writes imgsz (height, width) and batch into metadata_props: they are used as they are."""
    src = save(tmp_path, yolo_like({"imgsz": "[16, 24]", "batch": "2", "stride": "8", "names": "{0: 'cat'}"}))
    code, out, err = call("verify", src, "-q")
    assert code == 0, out + err
    assert shapes_line(out) == ("shapes     batch=2 (batch in the model's metadata), height=16 (imgsz in the model's "
                                "metadata), width=24 (imgsz in the model's metadata)")


def test_refuses_when_no_tried_size_fits(tmp_path):
    src = save(tmp_path, unsatisfiable())
    for command in ("verify", "bench"):
        code, out, err = call(command, src, "-q")
        assert_user_error(code, out, err, f"no size tried for dim n fits the model (1 to {MAX_SIZE}; at n=")
        assert err.rstrip().endswith("give it with --shape n=SIZE"), err
        assert "node 'reshape'" in err


def test_a_relation_only_some_sizes_satisfy_is_checked_at_run_time():
    """One compile for every n; the reshape's assumption 3*n = 77, which its type rule could not prove, is checked
    before each call: n=5 is one clear error naming the node and both sides (nothing runs, nothing is read out of
    bounds)."""
    import tritc
    from tritc.errors import InputShapeError

    model = tritc.compile(unsatisfiable())
    assert model.program.generic_error is None
    with pytest.raises(InputShapeError) as e:
        model.run(None, {"x": np.ones((5, 3), np.float32)})
    assert str(e.value) == ("node 'reshape' (reshape) needs 3*n = 77, but at these sizes (n=5 from input 'x' dim 0) "
                            "3*n is 15")
    assert model.stats["compilations"] == 1


def test_a_run_time_check_survives_the_artifact(tmp_path):
    import tritc
    from tritc.errors import InputShapeError

    path = tmp_path / "u.tritc"
    tritc.compile(unsatisfiable()).save(str(path))
    loaded = tritc.load(str(path))
    with pytest.raises(InputShapeError, match=r"node 'reshape' \(reshape\) needs 3\*n = 77"):
        loaded.run(None, {"x": np.ones((5, 3), np.float32)})
    assert loaded.stats["compilations"] == 0


def test_generated_inputs_have_a_budget(tmp_path):
    src = save(tmp_path, yolo_like())
    code, out, err = call("verify", src, "--shape", "batch=64,height=4096,width=4096", "-q")
    assert_user_error(code, out, err, "the inputs to generate at batch=64, height=4096, width=4096")
    assert "over the limit max_input_bytes=1073741824" in err
    assert "--shape NAME=SIZE" in err


def test_bench_finds_sizes(tmp_path):
    src = save(tmp_path, ocr_like())
    code, out, err = call("bench", src, "--threads", "1", "--warmup", "0", "--runs", "1", "-q")
    assert code == 0 and err == "", err
    assert "; shapes batch=1 (smallest that fits), width=16 (smallest that fits); batch=4, width=4 do not fit" in out


def test_compile_default_shapes_fit(tmp_path):
    """The shapes compiled ahead of time: 1 does not fit the YOLO-like model, 8x8 does; recorded sizes win."""
    code, out, err = call("compile", save(tmp_path, yolo_like()), "-o", str(tmp_path / "y.tritc"), "-q")
    assert code == 0, err
    assert "  shapes    batch=1, height=8, width=8 (other sizes compile on first use)" in out
    src = save(tmp_path, yolo_like({"imgsz": "32", "batch": "1"}), "meta.onnx")
    code, out, err = call("compile", src, "-o", str(tmp_path / "m.tritc"), "-q")
    assert code == 0, err
    assert "  shapes    batch=1, height=32, width=32 (other sizes compile on first use)" in out


# ---- the search ------------------------------------------------------------------------------------------------


def test_misfit_says_why():
    g = import_model(yolo_like())
    assert misfit(g, {"batch": 1, "height": 8, "width": 16}) is None
    assert misfit(g, {"batch": 1, "height": 4, "width": 8}).startswith("node 'cat' (concat): concat inputs")
    assert "over the limit max_input_bytes=1073741824" in misfit(g, {"batch": 1 << 10, "height": 1 << 12, "width": 1 << 12})


def test_choose_sizes_prefers_what_fits():
    g = import_model(ocr_like())
    assert choose_sizes(g, {}, {"batch": 4, "width": 32}).sizes == {"batch": 4, "width": 32}  # no search
    c = choose_sizes(g, {"batch": 3}, {"width": 4})
    assert c.sizes == {"batch": 3, "width": 16} and c.searched == ("width",) and "window of extent 3" in c.misfit
    with pytest.raises(OptionError, match="no size tried for dim n fits"):
        choose_sizes(import_model(unsatisfiable()), {}, {"n": 4})


def test_static_sizes_of_the_model_are_candidates():
    """A symbol that must equal a size the model fixes (a Reshape to [5,3], a table of 77 rows) is found."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["out"])]
    x = helper.make_tensor_value_info("x", F, ["n", 3])
    g = import_model(_model("m", nodes, [x], [numpy_helper.from_array(np.array([5, 3], np.int64), "shape")]))
    powers, others = candidate_sizes(g)
    assert powers[:4] == [1, 2, 4, 8] and powers[-1] == MAX_SIZE and 5 in others and 3 in others
    assert choose_sizes(g, {}, {"n": 4}).sizes == {"n": 5}


def test_smallest_fit_lowers_each_symbol_and_counts_its_tries():
    calls = []

    def fits(s: dict[str, int]) -> bool:  # h a multiple of 32, w at least 13, b anything
        calls.append(dict(s))
        return s["h"] % 32 == 0 and s["w"] >= 13

    found = smallest_fit(fits, {"b": 3}, ["h", "w", "c"], ([1, 2, 4, 8, 16, 32, 64], [24]))
    assert found == {"b": 3, "h": 32, "w": 16, "c": 1}
    assert len(calls) == 6 + 5 + 5 + 1  # joint 1..32; h 1..16 (none fits); w 1..16 (16 fits); c 1 (fits)
    assert smallest_fit(lambda s: False, {}, ["h"], ([1, 2], [3])) is None
    calls.clear()
    assert smallest_fit(fits, {}, ["h", "w"], ([1, 2, 4, 8, 16, 32], []), max_tries=3) is None and len(calls) == 3


# ---- recorded sizes ---------------------------------------------------------------------------------------------


def test_metadata_is_read_without_the_graph(tmp_path):
    m = yolo_like({"imgsz": "[640, 480]", "batch": "1"})
    path = save(tmp_path, m)
    want = {"imgsz": "[640, 480]", "batch": "1"}
    assert metadata_of(path) == metadata_of(m.SerializeToString()) == metadata_of(m) == want
    data = m.SerializeToString()
    assert metadata_of(data[:-3]) == {"imgsz": "[640, 480]"}  # a cut-off entry ends the scan, with what came before
    assert metadata_of(b"\xff" * 12) == {} and metadata_of(str(tmp_path / "missing.onnx")) == {}
    assert metadata_of(save(tmp_path, yolo_like(), "plain.onnx")) == {}


@pytest.mark.parametrize("imgsz,expected", [("[640, 480]", (640, 480)), ("320", (320, 320)), ("(256, 512)", (256, 512)),
                                            ("[1, 2, 3]", None), ("big", None), ("[0, 640]", None), ("[-640, 640]", None)])
def test_recorded_image_sizes(imgsz, expected):
    image = TensorType(DType.F32, ("batch", 3, "h", "w"))
    got = recorded_sizes({"imgsz": imgsz, "batch": "2"}, [("images", image), ("ids", TensorType(DType.I64, ("n", "s")))])
    if expected is None:
        assert got == {}
    else:
        assert {k: v for k, (v, _) in got.items()} == {"h": expected[0], "w": expected[1], "batch": 2}
    assert recorded_sizes({"batch": "2"}, [("images", image)]) == {}  # a batch alone is not ultralytics' signature


def test_dump_shows_the_specialise_pipeline_for_given_sizes():
    """`tritc dump --pipeline specialise --shape ...`: the step a compile runs for a specialisation, the sizes
    given bound and the other symbols left symbolic."""
    model = Path(__file__).resolve().parent / "fixtures" / "cache" / "llama_legacy17.onnx"
    code, out, err = call("dump", str(model), "--pipeline", "specialise", "--shape", "seq=1,past=3")
    assert code == 0 and err == "", err
    head = out.splitlines()[0]
    assert "%input_ids: i64[batch,1]" in head and "%past_key_values.0.key: f32[batch,2,3,16]" in head
    code, out, err = call("dump", str(model), "--shape", "seq=1")
    assert_user_error(code, out, err, "--shape goes with --memory-report (the sizes its numbers are for) or --pipeline "
                                      "specialise")
