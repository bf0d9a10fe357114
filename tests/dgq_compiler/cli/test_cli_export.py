import errno
import json
import os


from dgq_compiler.cli.main import build_parser, main


def _fail(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err.strip()


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in build_parser()._subparsers._group_actions[0].choices:
        assert name in out
    assert "pipeline:" in out


def test_export_help_explains_the_flags(capsys):
    assert main(["export", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--output" in out and "--tolerance" in out and "zoo name" in out


def test_help_shows_real_defaults_only(capsys):
    """Every command: a default worth showing is shown; None and off switches are not ("(default: None)")."""
    for name in build_parser()._subparsers._group_actions[0].choices:
        assert main([name, "--help"]) == 0
        out = capsys.readouterr().out
        assert "(default: None)" not in out and "(default: False)" not in out
    assert main(["run", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 25)" in out and "(default: the model's;" in out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: dgq" in capsys.readouterr().out


def test_unknown_model_name(capsys, tmp_path):
    err = _fail(capsys, ["export", "sd-v9", "-o", str(tmp_path / "o")])
    assert err == ("dgq export: error: unknown model 'sd-v9': expected one of sd-v1.4, sd-v2.1, sdxl-base, "
                   "sdxl-turbo, tiny or a local diffusers folder")


def test_missing_folder(capsys, tmp_path):
    err = _fail(capsys, ["export", str(tmp_path / "missing"), "-o", str(tmp_path / "o")])
    assert err == f"dgq export: error: model folder '{tmp_path / 'missing'}' does not exist"


def test_unwritable_output(capsys, tmp_path):
    err = _fail(capsys, ["export", "tiny", "-o", str(tmp_path / "no" / "such" / "dir")])
    assert err == f"dgq export: error: output folder '{tmp_path / 'no' / 'such'}' does not exist"


def test_read_only_output_folder(capsys, tmp_path, monkeypatch):
    def refuse(path, mode=0o777, **kwargs):  # a read-only mount: creating anything fails (also for root)
        raise PermissionError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(os, "mkdir", refuse)
    err = _fail(capsys, ["export", "tiny", "-o", str(tmp_path / "out")])
    assert err == f"dgq export: error: output folder '{tmp_path}' cannot take new files (Read-only file system)"


def test_non_unet_model(capsys, tmp_path, tiny_pipeline_dir):
    err = _fail(capsys, ["export", str(tiny_pipeline_dir / "text_encoder"), "-o", str(tmp_path / "o")])
    assert "holds a 'CLIPTextModel', expected a UNet2DConditionModel" in err
    assert not (tmp_path / "o").exists()


def test_bad_flag_values(capsys, tmp_path):
    assert _fail(capsys, ["export", "tiny", "-o", str(tmp_path / "o"), "--batch", "0"]) == \
        "dgq export: error: argument --batch: expected an integer in 1..256, got 0"
    assert "expected an integer, got 'x'" in _fail(capsys, ["export", "tiny", "-o", str(tmp_path / "o"), "--batch", "x"])


def test_export_from_a_pipeline_folder_prints_a_summary(capsys, tmp_path, tiny_pipeline_dir):
    assert main(["export", str(tiny_pipeline_dir), "-o", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "max abs error @ t=999.0" in out and "(passed)" in out
    report = json.loads((tmp_path / "o" / "export.json").read_text())
    assert report["inputs"] == ["sample", "timestep", "encoder_hidden_states"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
