"""FpgaConfig: the presets are valid and as documented; a bad preset name or JSON file gets one clear error."""

from __future__ import annotations

import json

import pytest

from tritc.codegen.fpga.config import PRESETS, FpgaConfigError, load_config


def test_presets_are_the_documented_builds():
    edge, dc = load_config("edge"), load_config("datacenter")
    assert (edge.matrix_rows, edge.matrix_lanes, edge.dram_bandwidth, edge.clock_hz) == (16, 64, 19.2e9, 250e6)
    assert (dc.matrix_rows, dc.matrix_lanes, dc.dram_bandwidth, dc.clock_hz) == (64, 128, 460e9, 250e6)
    assert load_config(None) is PRESETS["edge"]
    assert edge.word_bytes == 13 and load_config({**edge.to_json(), "weight_packing": "2bit"}).word_bytes == 16


def test_unknown_preset_is_refused():
    with pytest.raises(FpgaConfigError, match="unknown FPGA preset 'kv260'.*edge, datacenter"):
        load_config("kv260")


def _write(tmp_path, data):
    path = tmp_path / "board.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_json_config_round_trips(tmp_path):
    data = {**PRESETS["edge"].to_json(), "name": "mine", "dram_bandwidth": 25.6e9}
    cfg = load_config(_write(tmp_path, data))
    assert cfg.name == "mine" and cfg.dram_bandwidth == 25.6e9


@pytest.mark.parametrize("change, message", [
    ({"drop": "dram_bandwidth"}, "missing field.*dram_bandwidth"),
    ({"dram_bandwidth": 0}, "dram_bandwidth must be positive"),
    ({"clock_hz": -1.0}, "clock_hz must be positive"),
    ({"matrix_lanes": 48}, "matrix_lanes must divide 64 or be a multiple of it"),
    ({"matrix_lanes": 96}, "matrix_lanes must divide 64 or be a multiple of it"),
    ({"vector_lanes": 24}, "vector_lanes must be a power of two"),
    ({"weight_buffer_bytes": 100}, "weight_buffer_bytes is 100: too small for two 16x64 weight tiles"),
    ({"cache_buffer_bytes": 16}, "cache_buffer_bytes is 16: too small"),
    ({"vector_buffer_bytes": 1 << 40}, "vector_buffer_bytes exceeds the 20-bit word address"),
    ({"weight_packing": "base5"}, "weight_packing must be one of base3, 2bit"),
    ({"dram_kind": "gddr6"}, "dram_kind must be one of ddr4, hbm2"),
    ({"dram_outstanding": 0}, "dram_outstanding must be positive"),
    ({"dram_outstanding": 17}, "dram_outstanding must be at most 16"),
    ({"matrix_rows": "16"}, "matrix_rows must be an integer"),
    ({"bogus": 1}, "unknown field.*bogus"),
])
def test_bad_json_config_names_the_field(tmp_path, change, message):
    data = PRESETS["edge"].to_json()
    if "drop" in change:
        del data[change["drop"]]
    else:
        data.update(change)
    with pytest.raises(FpgaConfigError, match=message):
        load_config(_write(tmp_path, data))


def test_unreadable_and_invalid_json_files(tmp_path):
    with pytest.raises(FpgaConfigError, match="cannot read the FPGA config"):
        load_config(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FpgaConfigError, match="not valid JSON"):
        load_config(str(bad))
    arr = tmp_path / "arr.json"
    arr.write_text("[1, 2]")
    with pytest.raises(FpgaConfigError, match="must be a JSON object"):
        load_config(str(arr))
