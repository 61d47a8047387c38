import re
import string
from html.parser import HTMLParser

import pytest

from policies.categories import FIELDS
from policies.explain import (
    ACCESS_ITEMS,
    CATEGORY_NAMES,
    FIELD_NAMES,
    MESSAGES,
    PURPOSE_NAMES,
    render_notice,
)
from policies.loader import default_policy_path, load_policy

GOOD = default_policy_path().read_text()
DISTRICT = load_policy(default_policy_path())
LANGS = ["en", "es"]
FORMATS = ["md", "html"]
VOID = {"meta", "br", "hr", "img", "input", "link"}


class _Doc(HTMLParser):
    """Collects the visible text, checks that tags balance, and reads the first table."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.rows: list[list[str]] = []
        self.headers: list[str] = []
        self._cell: list[str] | None = None
        self._in_head = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "thead":
            self._in_head = True
        if tag == "tr" and not self._in_head:
            self.rows.append([])
        if tag in ("th", "td"):
            self._cell = []

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()
        if tag == "thead":
            self._in_head = False
        if tag in ("th", "td") and self._cell is not None:
            cell = " ".join("".join(self._cell).split())
            (self.headers if self._in_head else self.rows[-1]).append(cell)
            self._cell = None

    def handle_data(self, data):
        if self.stack and self.stack[-1] in ("style", "title"):
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(doc: str) -> _Doc:
    parser = _Doc()
    parser.feed(doc)
    parser.close()
    return parser


def visible(doc: str, fmt: str) -> str:
    """What a reader sees: tags and Markdown escapes removed, whitespace collapsed."""
    if fmt == "html":
        text = "".join(parse(doc).text)
    else:
        text = re.sub(r"\\(.)", r"\1", doc).replace("**", "")
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return " ".join(text.replace("\u00a0", " ").split())


def md_table(doc: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in doc.splitlines() if line.startswith("|")]
    split = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    return split[0], split[2:]


def table(doc: str, fmt: str) -> tuple[list[str], list[list[str]]]:
    if fmt == "html":
        parsed = parse(doc)
        return parsed.headers, parsed.rows
    headers, rows = md_table(doc)
    unescape = lambda cell: re.sub(r"\\(.)", r"\1", cell).replace("**", "")  # noqa: E731
    return [unescape(h) for h in headers], [[unescape(c) for c in row] for row in rows]


def render(policy, fmt, lang):
    return visible(render_notice(policy, fmt=fmt, lang=lang), fmt)


EXPECTED = {
    "en": {
        "retention": {"event_attendance": "730 days (2 years)", "communications": "365 days (1 year)"},
        "rights": [
            "See your data: you can ask to see the data the school holds about your family.",
            "Correct your data: you can ask for data about your family that is wrong to be corrected.",
            "Opt out: you can ask for your family to be left out of model training and statistics",
            "This applies from the next training round",
        ],
        "budget": [
            "Each school may use at most ε = 4 for the 2026-2027 school year.",
            "Of this, ε = 3 (75%) is for training models and ε = 1 (25%) is for statistics.",
            "δ = 0.00001, at most 1 in 100,000.",
            "No statistic about fewer than 10 families ever leaves the school.",
            "Schools with fewer than 50 families do not take part",
            "The district only ever sees the sum of all schools' model updates",
        ],
        "not_collected": (
            "The following is not collected at all: data from wearable devices such as fitness "
            "trackers (sleep and activity). Collecting any of it would need a new version of this "
            "policy and, first, your explicit consent."
        ),
        "summary": "for these purposes: early warning, outreach, and research.",
        "validity": "It is valid from August 1, 2026, through July 31, 2027.",
        "policy": "This notice is generated from policy district-default, version 1.",
        "deleted": "Each record is deleted once it is older than the time shown.",
        "headers": ["Data", "What exactly", "Why", "How long we keep it"],
        "why": "Early warning: Notice early when a family is drifting away from school",
        "fields": "A code for your child (not their name), a code for your family (not your name), school term, subject, and grade.",
        "access": "IT staff: whether the school's system is working, reports on data imports, and the log of everything the system has sent.",
    },
    "es": {
        "retention": {"event_attendance": "730 días (2 años)", "communications": "365 días (1 año)"},
        "rights": [
            "Ver sus datos: puede pedir ver los datos que la escuela guarda sobre su familia.",
            "Corregir sus datos: puede pedir que se corrijan los datos erróneos sobre su familia.",
            "Darse de baja: puede pedir que su familia quede fuera del entrenamiento de modelos",
            "Esto se aplica a partir de la siguiente ronda de entrenamiento",
        ],
        "budget": [
            "Cada escuela puede usar como máximo ε = 4 durante el año escolar 2026-2027.",
            "De ese total, ε = 3 (75 %) es para entrenar modelos y ε = 1 (25 %) para estadísticas.",
            "δ = 0.00001, como mucho 1 entre 100 000.",
            "Nunca sale de la escuela una estadística sobre menos de 10 familias.",
            "Las escuelas con menos de 50 familias no participan",
            "El distrito solo ve la suma de las actualizaciones de todas las escuelas",
        ],
        "not_collected": (
            "Lo siguiente no se recopila en absoluto: datos de relojes o pulseras de actividad "
            "(sueño y actividad física). Para recopilar cualquiera de estos datos haría falta una "
            "nueva versión de esta política y, antes, su consentimiento expreso."
        ),
        "summary": "con estos fines: alerta temprana, acercamiento a las familias e investigación.",
        "validity": "Es válido del 1 de agosto de 2026 al 31 de julio de 2027.",
        "policy": "Este aviso se genera a partir de la política district-default, versión 1.",
        "deleted": "Cada registro se elimina en cuanto supera la antigüedad indicada.",
        "headers": ["Datos", "Qué se guarda exactamente", "Para qué", "Cuánto tiempo se guardan"],
        "why": "Alerta temprana.",
        "fields": "Un código de su hijo o hija (no su nombre), un código de su familia (no su nombre), periodo escolar, materia y calificación.",
        "access": "Personal de informática: si el sistema de la escuela funciona bien, informes sobre la importación de datos y el registro de todo lo que ha enviado el sistema.",
    },
}  # fmt: skip


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
def test_district_notice_states_the_policy(fmt, lang):
    text = render(DISTRICT, fmt, lang)
    want = EXPECTED[lang]
    for line in (*want["rights"], *want["budget"], want["not_collected"], want["summary"]):
        assert line in text
    for line in (want["validity"], want["policy"], want["deleted"], want["fields"], want["access"]):
        assert line in text
    assert "Riverside Unified School District" in text
    assert "Family engagement analytics at Riverside Unified School District" in text
    assert "Dana Okafor, District Privacy Officer" in text
    assert "privacy@riverside-usd.example.org" in text
    assert "+1 555 010 2030" in text


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
def test_table_has_one_row_per_enabled_category_with_its_retention(fmt, lang):
    headers, rows = table(render_notice(DISTRICT, fmt=fmt, lang=lang), fmt)
    assert headers == EXPECTED[lang]["headers"]
    enabled = [n for n, rule in DISTRICT.categories.items() if rule.enabled]
    assert [row[0] for row in rows] == [CATEGORY_NAMES[lang][n] for n in enabled]
    assert all(len(row) == 4 for row in rows)
    by_name = {row[0]: row for row in rows}
    for name in enabled:
        days = DISTRICT.categories[name].retention_days
        assert by_name[CATEGORY_NAMES[lang][name]][3].startswith(f"{days} ")
    for name, retention in EXPECTED[lang]["retention"].items():
        assert by_name[CATEGORY_NAMES[lang][name]][3] == retention
    assert EXPECTED[lang]["why"] in by_name[CATEGORY_NAMES[lang]["grades"]][2]
    # the disabled category is not in the table, only in the "not collected" sentence
    assert CATEGORY_NAMES[lang]["wearables"] not in [row[0] for row in rows]


def test_english_why_uses_the_officers_purpose_descriptions():
    _, rows = table(render_notice(DISTRICT, fmt="html"), "html")
    why = {row[0]: row[2] for row in rows}[CATEGORY_NAMES["en"]["communications"]]
    for pid in ("early_warning", "outreach", "research"):
        assert DISTRICT.purposes[pid] in why


@pytest.mark.parametrize("lang", LANGS)
def test_html_is_a_standalone_balanced_document(lang):
    doc = render_notice(DISTRICT, fmt="html", lang=lang)
    assert doc.startswith("<!doctype html>\n")
    assert f'<html lang="{lang}">' in doc
    assert '<meta charset="utf-8">' in doc
    parsed = parse(doc)
    assert parsed.errors == []
    assert parsed.stack == []
    assert {"table", "thead", "tbody", "th", "td", "h1", "h2", "ul", "li", "style"} <= set(
        parsed.tags
    )
    assert parsed.tags.count("h1") == 1
    assert "script" not in parsed.tags
    assert not re.search(r"(src|href)=\"(https?:)?//", doc)
    assert "<link" not in doc
    assert '<a href="mailto:privacy@riverside-usd.example.org">' in doc
    assert '<a href="tel:+15550102030">' in doc


@pytest.mark.parametrize("lang", LANGS)
def test_markdown_has_headings_a_pipe_table_and_bullets(lang):
    doc = render_notice(DISTRICT, fmt="md", lang=lang)
    assert doc.startswith(f"# {MESSAGES[lang]['notice_title']}\n")
    assert doc.count("\n## ") == 6
    assert "\n|---|---|---|---|\n" in doc
    assert "\n- **" in doc
    assert "[privacy@riverside-usd.example.org](mailto:privacy@riverside-usd.example.org)" in doc


def _with_issuer(**update):
    return DISTRICT.model_copy(update={"issued_by": DISTRICT.issued_by.model_copy(update=update)})


def test_policy_strings_are_escaped_in_html():
    evil = "<script>alert('x')</script> & Co"
    policy = _with_issuer(organisation=evil, privacy_officer='"><img src=x onerror=alert(1)>')
    for lang in LANGS:
        doc = render_notice(policy, fmt="html", lang=lang)
        assert "<script>" not in doc
        assert "<img" not in doc
        assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; Co" in doc
        parsed = parse(doc)
        assert parsed.errors == [] and "script" not in parsed.tags and "img" not in parsed.tags
        assert evil in visible(doc, "html")


def test_yaml_strings_are_escaped_in_html_and_markdown(tmp_path):
    text = GOOD.replace(
        "title: Family engagement analytics at Riverside Unified School District",
        'title: "<script>steal()</script> | *bold* [x](http://evil)"',
    ).replace(
        "  research: Learn,", "  research: <b>Learn</b> | pipes | here,"
    )  # fmt: skip
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    policy = load_policy(path)
    doc = render_notice(policy, fmt="html")
    assert "<script>" not in doc and "<b>" not in doc
    assert "&lt;script&gt;steal()&lt;/script&gt;" in doc
    assert "&lt;b&gt;Learn&lt;/b&gt; | pipes | here" in doc
    md = render_notice(policy, fmt="md")
    assert "<script>" not in md and "[x](http://evil)" not in md
    assert "\\<script\\>steal()\\</script\\> \\| \\*bold\\* \\[x\\](http://evil)" in md
    headers, rows = md_table(md)
    assert len(headers) == 4 and all(len(row) == 4 for row in rows)  # the pipes did not split cells


@pytest.mark.parametrize("fmt", FORMATS)
def test_opt_out_not_offered_is_said_plainly(fmt):
    policy = DISTRICT.model_copy(
        update={"consent": DISTRICT.consent.model_copy(update={"opt_out": False})}
    )
    en = render(policy, fmt, "en")
    assert "Opt out: this is not offered under this policy." in en
    assert "from the next training round" not in en
    assert "See your data: you can ask to see the data" in en  # the other rights stay
    es = render(policy, fmt, "es")
    assert "Darse de baja: esta política no lo ofrece." in es
    assert "siguiente ronda de entrenamiento" not in es


def test_no_rights_at_all_is_said_plainly(tmp_path):
    text = GOOD.replace("  opt_out: true", "  opt_out: false")
    text = text.replace("  inspect: true", "  inspect: false").replace(
        "  correct: true", "  correct: false"
    )
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    policy = load_policy(path)
    en = render(policy, "md", "en")
    assert "See your data: this is not offered under this policy." in en
    assert "Correct your data: this is not offered under this policy." in en
    assert "This policy offers no rights to see, correct or opt out." in en
    assert "To use your rights" not in en


@pytest.mark.parametrize("fmt", FORMATS)
def test_secure_aggregation_off_changes_the_sentence(fmt, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(
        GOOD.replace("secure_aggregation_required: true", "secure_aggregation_required: false")
    )
    policy = load_policy(path)
    assert policy.secure_aggregation_required is False
    en, es = render(policy, fmt, "en"), render(policy, fmt, "es")
    assert (
        "This policy does not require secure aggregation: the district can see each school's model update on its own"
        in en
    )
    assert "only ever sees the sum" not in en
    assert (
        "Esta política no exige agregación segura: el distrito puede ver la actualización del modelo de cada escuela por separado"
        in es
    )
    assert "solo ve la suma" not in es
    on = render(DISTRICT, fmt, "en")
    assert "does not require secure aggregation" not in on  # fmt: skip


def test_enabling_wearables_with_explicit_consent_and_other_numbers(tmp_path):
    text = GOOD.replace(
        "    enabled: false\n    retention_days: 90\n",
        "    enabled: true\n    fields: [family_id, sleep_minutes]\n    retention_days: 90\n"
        "    purposes: [research]\n",
    ).replace("min_cohort_k: 10", "min_cohort_k: 25").replace(
        "  epsilon: 4.0", "  epsilon: 2.5"
    ).replace("period: \"2026-2027\"", "period: \"2026-H1\"").replace(
        "  training_share: 0.75", "  training_share: 0.6"
    ).replace("  delta: 1.0e-5", "  delta: 3.0e-6")  # fmt: skip
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    policy = load_policy(path)
    assert policy.categories["wearables"].enabled
    for fmt in FORMATS:
        en = render(policy, fmt, "en")
        assert "not collected at all" not in en
        assert (
            f"{CATEGORY_NAMES['en']['wearables']} is only collected from families who have given explicit consent."
            in en
        )
        assert "A code for your family (not your name) and minutes of sleep." in en
        assert "90 days (3 months)" in en
        assert "No statistic about fewer than 25 families" in en
        assert "at most ε = 2.5 for the period 2026-H1." in en
        assert (
            "Of this, ε = 1.5 (60%) is for training models and ε = 1 (40%) is for statistics." in en
        )
        assert "δ = 0.000003, at most about 1 in 333,333." in en
        es = render(policy, fmt, "es")
        assert "90 días (3 meses)" in es
        assert "durante el periodo 2026-H1" in es
        assert "ε = 2.5" in es and "(60 %)" in es
        _, rows = table(render_notice(policy, fmt=fmt, lang="es"), fmt)
        assert rows[-1][0] == CATEGORY_NAMES["es"]["wearables"]
        assert rows[-1][2] == "Investigación."


def test_retention_without_whole_years_or_months_shows_days_only(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD.replace("retention_days: 365", "retention_days: 400"))
    _, rows = table(render_notice(load_policy(path), fmt="md"), "md")
    assert rows[1][3] == "400 days"
    assert rows[0][3] == "730 days (2 years)"


def test_small_cohort_and_unknown_names(tmp_path):
    text = (
        GOOD.replace("min_cohort_k: 10", "min_cohort_k: 0")
        .replace(
            "  research: Learn,",
            "  family_survey: Ask families what they think of school events.\n  research: Learn,",
        )
        .replace("purposes: [early_warning, research]\n  communications", "purposes: [family_survey]\n  communications")
        .replace("[node_health, ingestion_reports, audit_log]", "[node_health, weekly_backup_report]")
    )  # fmt: skip
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    policy = load_policy(path)
    en = render(policy, "md", "en")
    assert "This policy sets no minimum group size" in en
    assert "IT staff: whether the school's system is working and weekly backup report." in en
    assert "Family survey: Ask families what they think of school events." in en
    assert "for these purposes: early warning, outreach, family survey, and research." in en
    es_doc = render_notice(policy, fmt="html", lang="es")
    _, rows = table(es_doc, "html")
    assert rows[0][2] == "Ask families what they think of school events."  # officer's own words
    assert (
        "con estos fines: alerta temprana, acercamiento a las familias, «Ask families what they "
        "think of school events» e investigación."
    ) in visible(es_doc, "html")
    assert "Esta política no fija un tamaño mínimo de grupo" in visible(es_doc, "html")


def test_plain_words_cover_every_field_category_and_access_item():
    every_field = {field for fields in FIELDS.values() for field in fields}
    access_items = {*DISTRICT.access.staff, *DISTRICT.access.it, *DISTRICT.access.parents}
    for lang in LANGS:
        assert set(FIELD_NAMES[lang]) == every_field
        assert set(CATEGORY_NAMES[lang]) == set(FIELDS)
        assert access_items <= set(ACCESS_ITEMS[lang])
        assert set(PURPOSE_NAMES[lang]) == {"early_warning", "outreach", "research"}
    assert set(ACCESS_ITEMS["en"]) == set(ACCESS_ITEMS["es"])


def test_languages_have_the_same_messages_and_placeholders():
    def placeholders(template):
        return {name for _, name, _, _ in string.Formatter().parse(template) if name}

    assert set(MESSAGES["en"]) == set(MESSAGES["es"])
    for key, template in MESSAGES["en"].items():
        assert placeholders(template) == placeholders(MESSAGES["es"][key]), key


def test_api_is_keyword_only_and_checks_its_choices():
    with pytest.raises(TypeError):
        render_notice(DISTRICT, "html")  # type: ignore[misc]
    with pytest.raises(ValueError, match="lang 'fr'"):
        render_notice(DISTRICT, lang="fr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fmt 'pdf'"):
        render_notice(DISTRICT, fmt="pdf")  # type: ignore[arg-type]
    assert render_notice(DISTRICT) == render_notice(DISTRICT, fmt="md", lang="en")
