"""The synthetic district: export format v1 files, determinism, ground truth, calibration."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from cli import main as cli_main
from cli import synth as cli_synth
from client_node import export_format as ef
from simulations.datasets import DATA_ROOT
from simulations.errors import SimulationError
from simulations.synth import (
    CALIBRATION_TOLERANCE,
    GROUND_TRUTH,
    NHES_MAPPING,
    ONEROSTER_EXTRA_USER_COLUMNS,
    TRUE_EFFECTS,
    generate_district,
)

SMALL = {"schools": 3, "families": 60, "weeks": 12}
START = date(2026, 9, 7)
SCHEMA = ef.json_schema()["$defs"]
GUARDIAN_ROLES = ("parent", "guardian")


def generate(root: Path, *, seed: int, **size: int) -> Path:
    return generate_district(**{**SMALL, **size}, seed=seed, out=root)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("small"), seed=7)


@pytest.fixture(scope="module")
def truth(small) -> dict:
    return json.loads((small / GROUND_TRUTH).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def district20(tmp_path_factory) -> Path:
    """The calibration district, 20 schools × 500 families × 40 weeks (about 11 s), built once."""
    return generate_district(
        schools=20, families=500, weeks=40, seed=0, out=tmp_path_factory.mktemp("d20")
    )


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def school_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


class Roster:
    """Family and student ids as an ingester would find them, from either roster kind."""

    def __init__(self, folder: Path):
        if (folder / ef.ROSTER.name).exists():
            self.kind = "simple"
            roster = read(folder / ef.ROSTER.name)
            self.students = set(roster["student_id"])
            self.families = set(roster["family_id"])
            self.family_groups = self.families
        else:
            self.kind = "oneroster"
            users = read(folder / ef.ONEROSTER_USERS.name)
            students = users[users["role"] == "student"]
            self.students = set(students["sourcedId"])
            # a family is its students and their guardians; the export files name it by the
            # smallest of its guardians' sourcedIds, as client_node.ingest does
            self.guardians = set(users.loc[users["role"].isin(GUARDIAN_ROLES), "sourcedId"])
            self.family_groups = {frozenset(a.split(",")) for a in students["agentSourcedIds"]}
            self.families = {min(group) for group in self.family_groups}


def check_source(folder: Path, source: ef.SourceFile, roster: Roster) -> pd.DataFrame:
    df = read(folder / source.name)
    names = [c.name for c in source.columns]
    assert {c.name for c in source.columns if c.required} <= set(df.columns), source.name
    extra = set(df.columns) - set(names)
    assert extra <= (set(ONEROSTER_EXTRA_USER_COLUMNS) if source is ef.ONEROSTER_USERS else set())
    properties = SCHEMA[source.name.removesuffix(".csv")]["properties"]
    for column in source.columns:
        if column.name not in df:
            continue
        cells = df[column.name]
        if column.required:
            assert (cells != "").all(), (source.name, column.name)
        given = cells[cells != ""]
        if column.type == "enum":
            assert set(given) <= set(column.values), (source.name, column.name)
        if "pattern" in properties[column.name]:
            bad = given[~given.str.fullmatch(properties[column.name]["pattern"])]
            assert bad.empty, (source.name, column.name, bad.head().tolist())
        if column.type == "date":
            pd.to_datetime(given, format="%Y-%m-%d")  # real calendar dates
        if column.type == "datetime":
            pd.to_datetime(given, format="%Y-%m-%dT%H:%M:%S")
        if column.minimum is not None or column.maximum is not None:
            values = given.astype(float)
            assert values.min() >= (column.minimum if column.minimum is not None else -np.inf)
            assert values.max() <= (column.maximum if column.maximum is not None else np.inf)
    if len(df):
        key = list(source.key)
        assert not df.duplicated(key).any(), source.name
        in_order = df[key].apply(tuple, axis=1).tolist()
        assert in_order == sorted(in_order), f"{source.name} is not sorted by {key}"
    for column, target in source.links.items():
        if target == "roster":
            allowed = roster.students if column == "student_id" else roster.families
        else:
            allowed = set(read(folder / target)[column])
        assert set(df[column]) <= allowed, (source.name, column)
    return df


def test_every_file_matches_export_format_v1(small):
    folders = school_folders(small)
    assert [f.name for f in folders] == ["school-01", "school-02", "school-03"]
    kinds = set()
    for folder in folders:
        assert b"\r" not in b"".join(p.read_bytes() for p in folder.iterdir())
        roster = Roster(folder)
        kinds.add(roster.kind)
        if roster.kind == "simple":
            check_source(folder, ef.ROSTER, roster)
            assert not (folder / ef.ONEROSTER_USERS.name).exists()
        else:
            assert not (folder / ef.ROSTER.name).exists()
            for name in (*ef.ONEROSTER_FILES, "roles.csv"):
                assert (folder / name).exists(), name
            users = check_source(folder, ef.ONEROSTER_USERS, roster)
            agents = dict(zip(users["sourcedId"], users["agentSourcedIds"], strict=True))
            for _, user in users.iterrows():  # links go both ways
                for agent in user["agentSourcedIds"].split(","):
                    assert user["sourcedId"] in agents[agent].split(",")
            assert (users.loc[users["role"] == "student", "grades"] != "").all()
            for column in ("givenName", "familyName", "email"):  # identifiers to minimize
                assert (users[column] != "").all()
            orgs = read(folder / "orgs.csv")
            school_org = orgs.loc[orgs["type"] == "school", "sourcedId"].item()
            assert set(users["orgSourcedIds"]) == {school_org}
            enrollments = read(folder / "enrollments.csv")
            assert set(enrollments["userSourcedId"]) == roster.students
            roles = read(folder / "roles.csv")
            assert sorted(roles["userSourcedId"]) == sorted(users["sourcedId"])
            assert (
                roles.set_index("userSourcedId")["role"].sort_index()
                == users.set_index("sourcedId")["role"].sort_index()
            ).all()
        for source in ef.SOURCES:
            if source is ef.WEARABLES:
                assert not (folder / source.name).exists()  # needs consent: not generated
                continue
            df = check_source(folder, source, roster)
            assert len(df) > 0, source.name
        attendance = read(folder / ef.ATTENDANCE.name)
        days = pd.to_datetime(attendance["date"].unique())
        assert (days.day_of_week < 5).all()
        assert len(days) == SMALL["weeks"] * 5
        # the families that appear in the exports are the roster's families
        comms = read(folder / ef.COMMUNICATIONS.name)
        assert len(set(comms["family_id"])) == len(roster.family_groups)
    assert kinds == {"simple", "oneroster"}


def test_same_seed_same_bytes_other_seed_other_bytes(small, tmp_path):
    again = generate(tmp_path / "again", seed=7)
    other = generate(tmp_path / "other", seed=8)
    digest = tree_digest(small)
    assert len(digest) > 20
    assert tree_digest(again) == digest
    other_digest = tree_digest(other)
    assert other_digest != digest
    assert all(other_digest.get(name) != sha for name, sha in digest.items())


def test_rerun_into_an_earlier_district_replaces_it(tmp_path):
    out = tmp_path / "d"
    generate(out, seed=1, schools=3, families=20, weeks=4)
    generate(out, seed=2, schools=2, families=20, weeks=4)
    fresh = generate(tmp_path / "fresh", seed=2, schools=2, families=20, weeks=4)
    assert tree_digest(out) == tree_digest(fresh)  # school-03 is gone, nothing is left over


def test_ground_truth_is_outside_the_schools_and_names_every_family(small, truth):
    assert (small / GROUND_TRUTH).is_file()
    assert not any((f / GROUND_TRUTH).exists() for f in school_folders(small))
    assert sorted(truth["schools"]) == [f.name for f in school_folders(small)]
    assert truth["parameters"] == {**SMALL, "seed": 7, "start": "2026-09-07"}
    for folder in school_folders(small):
        school = truth["schools"][folder.name]
        roster = Roster(folder)
        named = set(school["families"])
        if roster.kind == "simple":
            assert named == roster.families
        else:  # one guardian of every family: the one whose sourcedId is smallest
            assert named == roster.families <= roster.guardians
        assert len(school["families"]) == school["n_families"] == len(roster.family_groups)
        students = {s for fam in school["families"].values() for s in fam["students"]}
        assert students == roster.students
        for family in school["families"].values():
            assert len(family["engagement"]["weekly"]) == SMALL["weeks"]
            assert family["disengages"] == (family["disengage_week"] is not None)
            pref = family["channel_preference"]
            assert set(pref["open_probability_by_channel"]) == set(ef.CHANNELS)
            assert pref["preferred_channel"] in ef.CHANNELS
            assert set(pref["opens_content"]) <= set(ef.CONTENT_TYPES)
        if roster.kind == "oneroster":  # the truth's family id is a parent's or guardian's
            users = read(folder / ef.ONEROSTER_USERS.name).set_index("sourcedId")
            assert set(users.loc[list(school["families"]), "role"]) <= set(GUARDIAN_ROLES)
    effects = truth["true_effects_on_grades"]
    assert {k: v["coefficient"] for k, v in effects.items()} == TRUE_EFFECTS
    assert set(ef.EVENT_TYPES) <= set(effects)
    assert set(truth["calibration"]["items"]) == set(NHES_MAPPING)


def test_schools_differ(small, truth):
    """Non-IID: sizes, channel mix, calendars and socioeconomic mix are not all equal."""
    sizes = [s["n_families"] for s in truth["schools"].values()]
    assert len(set(sizes)) > 1
    mixes = []
    for folder in school_folders(small):
        comms = read(folder / ef.COMMUNICATIONS.name)
        outbound = comms[comms["direction"] == "school_to_family"]
        share = outbound["channel"].value_counts(normalize=True).reindex(ef.CHANNELS).fillna(0)
        mixes.append(share.to_numpy())
    gaps = [np.abs(a - b).max() for i, a in enumerate(mixes) for b in mixes[i + 1 :]]
    assert max(gaps) > 0.1  # the channel shares in the files differ by more than noise
    calendars = {json.dumps(s["event_calendar"]) for s in truth["schools"].values()}
    assert len(calendars) > 1
    ses = [s["socioeconomic_index"] for s in truth["schools"].values()]
    assert max(ses) - min(ses) > 0.1


def _week(dates: pd.Series) -> np.ndarray:
    return ((pd.to_datetime(dates) - pd.Timestamp(START)).dt.days // 7).to_numpy()


def test_disengaging_families_do_less_after_their_week(small, truth):
    before_after = {"events": [0, 0, 0, 0], "minutes": [0.0, 0, 0.0, 0], "absent": [0, 0, 0, 0]}
    for folder in school_folders(small):
        families = truth["schools"][folder.name]["families"]
        week_of = {f: r["disengage_week"] for f, r in families.items() if r["disengages"]}
        # event attendance: attended / invited, before and after each family's week
        events = read(folder / ef.EVENTS.name)
        events["week"] = _week(events["event_date"])
        came = set(map(tuple, read(folder / ef.EVENT_ATTENDANCE.name).to_numpy()))
        for fid, week in week_of.items():
            for event_id, event_week in zip(events["event_id"], events["week"], strict=True):
                slot = 0 if event_week < week else 2
                before_after["events"][slot] += (event_id, fid) in came
                before_after["events"][slot + 1] += 1
        # platform minutes per family-week
        activity = read(folder / ef.PLATFORM_ACTIVITY.name)
        activity = activity[activity["family_id"].isin(week_of)]
        weeks = _week(activity["date"])
        cut = activity["family_id"].map(week_of).to_numpy()
        minutes = activity["minutes"].astype(float).to_numpy()
        before_after["minutes"][0] += minutes[weeks < cut].sum()
        before_after["minutes"][2] += minutes[weeks >= cut].sum()
        before_after["minutes"][1] += sum(week_of.values())
        before_after["minutes"][3] += sum(SMALL["weeks"] - w for w in week_of.values())
        # their children's absences
        student_week = {
            s: week_of[f] for f in week_of for s in families[f]["students"]
        }  # fmt: skip
        attendance = read(folder / ef.ATTENDANCE.name)
        attendance = attendance[attendance["student_id"].isin(student_week)]
        after = _week(attendance["date"]) >= attendance["student_id"].map(student_week).to_numpy()
        absent = (attendance["status"] == "absent").to_numpy()
        before_after["absent"][0] += absent[~after].sum()
        before_after["absent"][1] += (~after).sum()
        before_after["absent"][2] += absent[after].sum()
        before_after["absent"][3] += after.sum()
    rate = {k: (v[0] / v[1], v[2] / v[3]) for k, v in before_after.items()}
    assert sum(len(s["families"]) for s in truth["schools"].values()) > 100
    assert before_after["events"][1] > 50 and before_after["events"][3] > 50
    assert rate["events"][1] < 0.75 * rate["events"][0], rate
    assert rate["minutes"][1] < 0.6 * rate["minutes"][0], rate
    assert rate["absent"][1] > 1.2 * rate["absent"][0], rate


def test_bad_arguments_raise_one_clear_error(tmp_path):
    with pytest.raises(SimulationError, match=r"--schools 0 is not allowed; it must be"):
        generate_district(schools=0, families=5, weeks=2, seed=0, out=tmp_path / "a")
    with pytest.raises(SimulationError, match=r"--seed -1 is not allowed"):
        generate_district(schools=1, families=5, weeks=2, seed=-1, out=tmp_path / "a")
    (tmp_path / "file").write_text("x")
    with pytest.raises(SimulationError, match=r"is a file"):
        generate_district(schools=1, families=5, weeks=2, seed=0, out=tmp_path / "file")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(SimulationError, match=r"not empty and holds no earlier synth district"):
        generate_district(schools=1, families=5, weeks=2, seed=0, out=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# --- the command line --------------------------------------------------------------------------


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """`schoolfed synth ARGS` through cli.main once it registers synth; until then through the
    same parser class and the same one-line error handling."""
    parser = cli_main._parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    console = Console(file=io.StringIO(), width=160)
    try:
        if "synth" in commands.choices:
            code = cli_main.main(["synth", *args])
        else:
            local = cli_main._Parser(prog="schoolfed")
            cli_synth.register(local.add_subparsers(dest="command", required=True))
            parsed = local.parse_args(["synth", *args])
            try:
                code = parsed.handler(parsed, console)
            except SimulationError as exc:
                print(f"schoolfed synth: {exc}", file=sys.stderr)
                code = cli_main.EXIT_USAGE
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + console.file.getvalue(), captured.err  # type: ignore[attr-defined]


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("option", ["--schools", "--weeks", "--families"])
def test_cli_rejects_zero(capsys, tmp_path, option):
    code, _, err = run_cli(capsys, option, "0", "--out", str(tmp_path / "o"))
    assert code == 2
    assert f"{option}: '0' is not allowed; it must be at least 1" in one_line(err)
    assert not (tmp_path / "o").exists()


def test_cli_rejects_an_out_that_is_a_file(capsys, tmp_path):
    (tmp_path / "f").write_text("x")
    code, _, err = run_cli(capsys, "--out", str(tmp_path / "f"), "--schools", "1")
    assert code == 2
    assert one_line(err).startswith(f"schoolfed synth: --out {tmp_path / 'f'} is a file")


def test_cli_writes_a_district(capsys, tmp_path):
    args = ("--schools", "2", "--families", "15", "--weeks", "3", "--seed", "4")
    code, out, err = run_cli(capsys, *args, "--out", str(tmp_path / "d"))
    assert code == 0, err
    assert (tmp_path / "d" / GROUND_TRUTH).exists()
    assert sorted(p.name for p in school_folders(tmp_path / "d")) == ["school-01", "school-02"]
    assert "FSATCNFN" in out


# --- calibration -------------------------------------------------------------------------------


def nhes_share(item: str) -> float:
    """Computed here from the CSV, independently of the generator: yes among yes/no."""
    codes = pd.read_csv(DATA_ROOT / "nhes-2019-pfi" / "CuratedData.csv", usecols=[item])[item]
    return float((codes == 1).sum() / codes.isin([1, 2]).sum())


def test_calibration_to_nhes_2019_within_3_points(district20):
    assert CALIBRATION_TOLERANCE == 0.03
    families = 0
    attended = dict.fromkeys(NHES_MAPPING, 0)
    for folder in school_folders(district20):
        families += len(Roster(folder).family_groups)
        events = read(folder / ef.EVENTS.name)
        came = read(folder / ef.EVENT_ATTENDANCE.name)
        for item, types in NHES_MAPPING.items():
            ids = set(events.loc[events["event_type"].isin(types), "event_id"])
            attended[item] += came.loc[came["event_id"].isin(ids), "family_id"].nunique()
    truth = json.loads((district20 / GROUND_TRUTH).read_text(encoding="utf-8"))
    assert families == truth["district"]["families"] > 9000
    for item in NHES_MAPPING:
        achieved, target = attended[item] / families, nhes_share(item)
        assert abs(achieved - target) <= CALIBRATION_TOLERANCE, (item, achieved, target)
        reported = truth["calibration"]["items"][item]
        assert reported["nhes_share"] == pytest.approx(target, abs=1e-4)
        assert reported["achieved_share"] == pytest.approx(achieved, abs=1e-4)
    # the mapping covers the four required NHES activities
    assert {"FSMTNG", "FSATCNFN", "FSSPORTX", "FSVOL"} <= set(NHES_MAPPING)
