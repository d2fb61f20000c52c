"""benchmarks/proxy_sweep.py: each setting's process trains into that setting's own folder."""

from pathlib import Path

from tests.conftest import benchmark


def test_each_setting_runs_in_its_own_folder(tmp_path):
    sweep = benchmark("proxy_sweep")
    folders = {}
    for name in ("dl3_os8_5k_e8", "fcn_e100"):
        args = sweep.parser().parse_args(sweep.child_command(name, tmp_path / name)[2:])
        assert args.names == [], "nothing of the child's command is read as a setting to sweep"
        folders[args.one[0]] = Path(args.one[1])
    assert folders == {"dl3_os8_5k_e8": tmp_path / "dl3_os8_5k_e8", "fcn_e100": tmp_path / "fcn_e100"}


def test_every_setting_names_a_plugin_and_its_data():
    sweep = benchmark("proxy_sweep")
    for name, (plugin, changes, recipe, data) in sweep.SETTINGS.items():
        assert plugin in sweep.PLUGINS, name
        assert data.startswith("builtin:shapes"), name
        assert isinstance(changes, dict) and isinstance(recipe, dict), name
