"""The plain-language notice for parents, generated from a policy (DESIGN.md, privacy model 9).

Every fact in the notice (who runs it, what is kept and why, for how long, ε, δ, k, SecAgg+,
the families' rights, who sees what, whom to contact, validity) is read from the `Policy`; the
text around those facts lives in `MESSAGES`, one dict of templates per language, and the plain
words for categories, fields, purposes and access items live in the dicts below it.

The notice is first built as a small list of format-neutral blocks (headings, paragraphs,
bullet lists, one table) whose text is a sequence of segments; the Markdown and HTML renderers
then escape every segment, so no policy-provided string reaches the output unescaped.
"""

from __future__ import annotations

import html
import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Literal, get_args
from urllib.parse import quote

from policies.schema import CategoryRule, Policy

Lang = Literal["en", "es"]
Fmt = Literal["md", "html"]

# --------------------------------------------------------------------------------------------
# Words. Templates use str.format placeholders; every placeholder is filled from the policy.
# --------------------------------------------------------------------------------------------

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "notice_title": "Privacy notice for families",
        "summary": (
            "{organisation} runs this program at your child's school. It uses school data about "
            "your family for these purposes: {purposes}. Your family's data stays at the school. "
            "Only combined figures with random noise added ever leave it, never names or "
            "individual records. This notice explains what is collected, why, how long it is "
            "kept, and what your rights are."
        ),
        "h_collected": "What we collect and why",
        "collected_intro": (
            "Only the data in this table is kept. Anything else is dropped when data is "
            "imported. Names, e-mail addresses, phone numbers and home addresses are never stored."
        ),
        "th_category": "Data",
        "th_fields": "What exactly",
        "th_why": "Why",
        "th_retention": "How long we keep it",
        "purpose_line": "{label}: {description}",
        "no_fields": "Nothing (no fields are listed)",
        "no_purpose": "No purpose is stated in this policy",
        "retention_unset": "No limit is set in this policy (ask the privacy officer)",
        "retention_days": "{days} days",
        "retention_day": "1 day",
        "retention_with_unit": "{days} ({whole})",
        "years_1": "1 year",
        "years_n": "{n} years",
        "months_1": "1 month",
        "months_n": "{n} months",
        "deleted_after": "Each record is deleted once it is older than the time shown.",
        "explicit_enabled": "{category} is only collected from families who have given explicit consent.",
        "not_collected": "The following is not collected at all: {categories}.",
        "explicit_disabled_all": (
            "Collecting any of it would need a new version of this policy and, first, your "
            "explicit consent."
        ),
        "explicit_disabled_one": (
            "For {category}, collecting it would need a new version of this policy and, first, "
            "your explicit consent."
        ),
        "h_leaves": "What leaves the school, and in what form",
        "leaves_only": (
            "Only model updates (what a shared prediction model learned at the school) and "
            "statistics (counts and averages over groups of families) leave the school. Both are "
            "combined over many families and have random noise added. Rows of data and names "
            "never leave the school."
        ),
        "leaves_dp": (
            "The noise is added using a method called differential privacy. It protects each family as "
            "a whole: everything the school holds about your family counts as one unit. ε "
            "(epsilon) measures how much any one family's data can change what leaves the "
            "school. The smaller ε is, the stronger the protection."
        ),
        "leaves_budget": "Each school may use at most {epsilon} for {period}.",
        "leaves_budget_spent": (
            "Everything the school sends in that time counts against this limit. When it is used "
            "up, the school stops sending model updates and statistics until the next period."
        ),
        "leaves_split": (
            "Of this, {training_epsilon} ({training_percent}) is for training models and "
            "{stats_epsilon} ({stats_percent}) is for statistics."
        ),
        "leaves_split_training_only": "All of it is for training models; none is for statistics.",
        "leaves_split_stats_only": "All of it is for statistics; none is for training models.",
        "leaves_delta": (
            "The protection also allows a very small chance of failing: δ = {delta}, at most "
            "{one_in}."
        ),
        "one_in_exact": "1 in {n}",
        "one_in_about": "about 1 in {n}",
        "leaves_k": "No statistic about fewer than {k} families ever leaves the school.",
        "leaves_k_none": (
            "This policy sets no minimum group size: a statistic may describe a single family "
            "(still with noise added)."
        ),
        "leaves_secagg_on": (
            "The district only ever sees the sum of all schools' model updates, never the update "
            "of one school on its own (secure aggregation)."
        ),
        "leaves_secagg_off": (
            "This policy does not require secure aggregation: the district can see each "
            "school's model update on its own (still with noise added)."
        ),
        "leaves_min_school": (
            "Schools with fewer than {n} families do not take part, because there are too few "
            "families to hide anyone."
        ),
        "period_school_year": "the {period} school year",
        "period_other": "the period {period}",
        "h_rights": "Your rights",
        "right_inspect": "See your data:",
        "right_inspect_yes": "you can ask to see the data the school holds about your family.",
        "right_correct": "Correct your data:",
        "right_correct_yes": "you can ask for data about your family that is wrong to be corrected.",
        "right_opt_out": "Opt out:",
        "right_opt_out_yes": (
            "you can ask for your family to be left out of model training and statistics, and "
            "not to be scored by the models. This applies {when}."
        ),
        "right_not_offered": "this is not offered under this policy.",
        "opt_out_next_round": "from the next training round (the next time the models are updated)",
        "rights_how": "To use your rights, contact the privacy officer below.",
        "rights_none": "This policy offers no rights to see, correct or opt out.",
        "h_access": "Who at the school can see what",
        "role_staff": "School staff:",
        "role_it": "IT staff:",
        "role_parents": "Parents and guardians (you):",
        "access_nothing": "nothing",
        "access_stays": "All of this stays at the school.",
        "h_contact": "Questions? Contact us",
        "contact_officer": "Privacy officer:",
        "contact_organisation": "Organisation:",
        "contact_email": "E-mail:",
        "contact_phone": "Phone:",
        "h_about": "About this notice",
        "about_policy": "This notice is generated from policy {policy_id}, version {version}.",
        "about_validity": "It is valid from {valid_from}, through {valid_until}.",
        "about_purposes_language": "",
        "and": "and",
    },
    "es": {
        "notice_title": "Aviso de privacidad para las familias",
        "summary": (
            "{organisation} lleva a cabo este programa en la escuela de su hijo o hija. Usa "
            "datos escolares sobre su familia con estos fines: {purposes}. Los datos de su "
            "familia se quedan en la escuela. De ella solo salen cifras combinadas, con ruido "
            "aleatorio añadido, nunca nombres ni registros individuales. Este aviso explica qué "
            "datos se recopilan, para qué, cuánto tiempo se guardan y cuáles son sus derechos."
        ),
        "h_collected": "Qué datos recopilamos y para qué",
        "collected_intro": (
            "Solo se guardan los datos de esta tabla. Todo lo demás se descarta al importar los "
            "datos. Nunca se guardan nombres, correos electrónicos, números de teléfono ni "
            "domicilios."
        ),
        "th_category": "Datos",
        "th_fields": "Qué se guarda exactamente",
        "th_why": "Para qué",
        "th_retention": "Cuánto tiempo se guardan",
        "purpose_line": "{label}: {description}",
        "no_fields": "Nada (no se indica ningún dato)",
        "no_purpose": "Esta política no indica ningún fin",
        "retention_unset": "Esta política no fija un plazo (consulte a la persona responsable de privacidad)",
        "retention_days": "{days} días",
        "retention_day": "1 día",
        "retention_with_unit": "{days} ({whole})",
        "years_1": "1 año",
        "years_n": "{n} años",
        "months_1": "1 mes",
        "months_n": "{n} meses",
        "deleted_after": "Cada registro se elimina en cuanto supera la antigüedad indicada.",
        "explicit_enabled": (
            "{category}: solo se recopilan de las familias que han dado su consentimiento expreso."
        ),
        "not_collected": "Lo siguiente no se recopila en absoluto: {categories}.",
        "explicit_disabled_all": (
            "Para recopilar cualquiera de estos datos haría falta una nueva versión de esta "
            "política y, antes, su consentimiento expreso."
        ),
        "explicit_disabled_one": (
            "En el caso de {category}, para recopilarlos haría falta una nueva versión de esta "
            "política y, antes, su consentimiento expreso."
        ),
        "h_leaves": "Qué sale de la escuela y de qué forma",
        "leaves_only": (
            "De la escuela solo salen actualizaciones de modelos (lo que un modelo de predicción "
            "compartido aprendió en la escuela) y estadísticas (recuentos y promedios de grupos "
            "de familias). Ambas combinan los datos de muchas familias y llevan ruido aleatorio "
            "añadido. Ni las filas de datos ni los nombres salen nunca de la escuela."
        ),
        "leaves_dp": (
            "Ese ruido se añade con un método llamado privacidad diferencial. Protege a cada familia en "
            "su conjunto: todo lo que la escuela guarda sobre su familia cuenta como una sola "
            "unidad. ε (épsilon) mide cuánto pueden influir los datos de una sola familia en lo "
            "que sale de la escuela. Cuanto menor es ε, mayor es la protección."
        ),
        "leaves_budget": "Cada escuela puede usar como máximo {epsilon} durante {period}.",
        "leaves_budget_spent": (
            "Todo lo que la escuela envía en ese tiempo cuenta para este límite. Cuando se alcanza, "
            "la escuela deja de enviar actualizaciones de modelos y estadísticas hasta el "
            "periodo siguiente."
        ),
        "leaves_split": (
            "De ese total, {training_epsilon} ({training_percent}) es para entrenar modelos y "
            "{stats_epsilon} ({stats_percent}) para estadísticas."
        ),
        "leaves_split_training_only": (
            "Todo es para entrenar modelos; no queda nada para estadísticas."
        ),
        "leaves_split_stats_only": "Todo es para estadísticas; no queda nada para entrenar modelos.",
        "leaves_delta": (
            "La protección admite además una probabilidad muy pequeña de fallar: δ = {delta}, "
            "como mucho {one_in}."
        ),
        "one_in_exact": "1 entre {n}",
        "one_in_about": "alrededor de 1 entre {n}",
        "leaves_k": "Nunca sale de la escuela una estadística sobre menos de {k} familias.",
        "leaves_k_none": (
            "Esta política no fija un tamaño mínimo de grupo: una estadística puede describir a "
            "una sola familia (aunque siempre con ruido añadido)."
        ),
        "leaves_secagg_on": (
            "El distrito solo ve la suma de las actualizaciones de todas las escuelas, nunca la "
            "de una escuela por separado (agregación segura)."
        ),
        "leaves_secagg_off": (
            "Esta política no exige agregación segura: el distrito puede ver la actualización "
            "del modelo de cada escuela por separado (aunque siempre con ruido añadido)."
        ),
        "leaves_min_school": (
            "Las escuelas con menos de {n} familias no participan: con tan pocas familias no se "
            "puede garantizar que nadie sea identificado."
        ),
        "period_school_year": "el año escolar {period}",
        "period_other": "el periodo {period}",
        "h_rights": "Sus derechos",
        "right_inspect": "Ver sus datos:",
        "right_inspect_yes": "puede pedir ver los datos que la escuela guarda sobre su familia.",
        "right_correct": "Corregir sus datos:",
        "right_correct_yes": "puede pedir que se corrijan los datos erróneos sobre su familia.",
        "right_opt_out": "Darse de baja:",
        "right_opt_out_yes": (
            "puede pedir que su familia quede fuera del entrenamiento de modelos y de las "
            "estadísticas, y que los modelos no le asignen ninguna puntuación. Esto se aplica "
            "{when}."
        ),
        "right_not_offered": "esta política no lo ofrece.",
        "opt_out_next_round": (
            "a partir de la siguiente ronda de entrenamiento (la próxima vez que se actualicen "
            "los modelos)"
        ),
        "rights_how": (
            "Para ejercer sus derechos, comuníquese con la persona responsable de privacidad "
            "que figura más abajo."
        ),
        "rights_none": "Esta política no ofrece derechos para ver, corregir ni darse de baja.",
        "h_access": "Quién puede ver qué en la escuela",
        "role_staff": "Personal de la escuela:",
        "role_it": "Personal de informática:",
        "role_parents": "Madres, padres y tutores (usted):",
        "access_nothing": "nada",
        "access_stays": "Todo esto se queda en la escuela.",
        "h_contact": "¿Preguntas? Comuníquese con nosotros",
        "contact_officer": "Responsable de privacidad:",
        "contact_organisation": "Organización:",
        "contact_email": "Correo electrónico:",
        "contact_phone": "Teléfono:",
        "h_about": "Sobre este aviso",
        "about_policy": "Este aviso se genera a partir de la política {policy_id}, versión {version}.",
        "about_validity": "Es válido del {valid_from} al {valid_until}.",
        "about_purposes_language": (
            "El distrito redacta en inglés el título del programa (al principio de este aviso) y "
            "la descripción detallada de cada fin. Si tiene dudas sobre ellos, comuníquese con "
            "la persona responsable de privacidad."
        ),
        "and": "y",
    },
}

MONTHS: dict[str, tuple[str, ...]] = {
    "en": (
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    ),
    "es": (
        "enero", "febrero", "marzo", "abril", "mayo", "junio",
        "julio", "agosto", "septiembre", "octubre", "noviembre", "diciembre",
    ),
}  # fmt: skip

CATEGORY_NAMES: dict[str, dict[str, str]] = {
    "en": {
        "event_attendance": "Attendance at school events",
        "communications": "Messages between the school and you",
        "platform_activity": "Use of school apps and websites",
        "grades": "Your child's grades",
        "attendance": "Your child's attendance at school",
        "wearables": "Data from wearable devices such as fitness trackers (sleep and activity)",
    },
    "es": {
        "event_attendance": "Asistencia a eventos escolares",
        "communications": "Mensajes entre la escuela y usted",
        "platform_activity": "Uso de aplicaciones y sitios web de la escuela",
        "grades": "Calificaciones de su hijo o hija",
        "attendance": "Asistencia a clases de su hijo o hija",
        "wearables": "Datos de relojes o pulseras de actividad (sueño y actividad física)",
    },
}

# Keyed by field name: a name means the same in every category that has it (policies/categories).
FIELD_NAMES: dict[str, dict[str, str]] = {
    "en": {
        "family_id": "a code for your family (not your name)",
        "student_id": "a code for your child (not their name)",
        "event_id": "which event",
        "event_type": "kind of event",
        "event_date": "date",
        "event_time": "time",
        "mode": "in person or online",
        "attended": "whether you attended",
        "channel": "how a message was sent",
        "content_type": "kind of message",
        "direction": "whether the school or you sent it",
        "sent_at": "when it was sent",
        "opened_at": "when it was opened",
        "clicked_at": "when a link in it was clicked",
        "replied_at": "when it was answered",
        "date": "date",
        "platform": "which app or website",
        "feature": "which part of it was used",
        "sessions": "number of visits",
        "minutes": "minutes spent",
        "term": "school term",
        "subject": "subject",
        "grade": "grade",
        "period": "class period",
        "status": "attendance status (present, absent or late)",
        "excused": "whether an absence was excused",
        "sleep_minutes": "minutes of sleep",
        "active_minutes": "minutes of physical activity",
    },
    "es": {
        "family_id": "un código de su familia (no su nombre)",
        "student_id": "un código de su hijo o hija (no su nombre)",
        "event_id": "qué evento",
        "event_type": "tipo de evento",
        "event_date": "fecha",
        "event_time": "hora",
        "mode": "presencial o en línea",
        "attended": "si asistió",
        "channel": "por qué medio se envió un mensaje",
        "content_type": "tipo de mensaje",
        "direction": "si lo envió la escuela o usted",
        "sent_at": "cuándo se envió",
        "opened_at": "cuándo se abrió",
        "clicked_at": "cuándo se hizo clic en un enlace del mensaje",
        "replied_at": "cuándo se respondió",
        "date": "fecha",
        "platform": "qué aplicación o sitio web",
        "feature": "qué parte se usó",
        "sessions": "número de visitas",
        "minutes": "minutos de uso",
        "term": "periodo escolar",
        "subject": "materia",
        "grade": "calificación",
        "period": "hora de clase",
        "status": "estado de asistencia (presente, ausente o con retraso)",
        "excused": "si la falta fue justificada",
        "sleep_minutes": "minutos de sueño",
        "active_minutes": "minutos de actividad física",
    },
}

# Purpose ids this module knows how to name; any other id is shown with the officer's words.
PURPOSE_NAMES: dict[str, dict[str, str]] = {
    "en": {"early_warning": "Early warning", "outreach": "Outreach", "research": "Research"},
    "es": {
        "early_warning": "Alerta temprana",
        "outreach": "Acercamiento a las familias",
        "research": "Investigación",
    },
}

ACCESS_ITEMS: dict[str, dict[str, str]] = {
    "en": {
        "early_warning_list": "a list of families the school may want to reach out to (early warning)",
        "outreach_suggestions": "suggestions on how best to reach each family",
        "preferred_channel": "how each family prefers to be contacted",
        "node_health": "whether the school's system is working",
        "ingestion_reports": "reports on data imports",
        "audit_log": "the log of everything the system has sent",
        "own_dashboard": "your own family's dashboard",
        "own_data": "your own family's data",
        "transparency_notice": "this notice",
    },
    "es": {
        "early_warning_list": (
            "una lista de familias con las que la escuela podría querer comunicarse (alerta "
            "temprana)"
        ),
        "outreach_suggestions": "sugerencias sobre la mejor manera de contactar a cada familia",
        "preferred_channel": "cómo prefiere cada familia que se le contacte",
        "node_health": "si el sistema de la escuela funciona bien",
        "ingestion_reports": "informes sobre la importación de datos",
        "audit_log": "el registro de todo lo que ha enviado el sistema",
        "own_dashboard": "el panel de su propia familia",
        "own_data": "los datos de su propia familia",
        "transparency_notice": "este aviso",
    },
}

OPT_OUT_WHEN = {"next_round": "opt_out_next_round"}  # Consent.opt_out_takes_effect -> message

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif;
  font-size: 1.05rem; line-height: 1.55; color: #1f2328; background: #fff;
  max-width: 60rem; margin: 2rem auto; padding: 0 1.25rem; }
p, li { max-width: 46rem; }
h1 { font-size: 1.8rem; line-height: 1.25; margin: 0 0 .25rem; }
h2 { font-size: 1.3rem; margin: 2rem 0 .5rem; padding-bottom: .2rem;
  border-bottom: 1px solid #d0d7de; }
.lead { font-size: 1.15rem; color: #444c56; margin-top: 0; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0; font-size: .95rem; }
th, td { border: 1px solid #d0d7de; padding: .5rem .6rem; text-align: left;
  vertical-align: top; }
th { background: #f0f3f6; }
tbody tr:nth-child(even) { background: #f9fafb; }
td ul { margin: 0; padding-left: 1.1rem; }
li { margin: .25rem 0; }
a { color: #0b5cad; }
.small { font-size: .9rem; color: #57606a; }
@media print { body { margin: 0; max-width: none; } a { color: inherit; } }
"""

# --------------------------------------------------------------------------------------------
# Format-neutral document
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Strong:
    text: str


@dataclass(frozen=True)
class Link:
    text: str
    href: str  # already percent-encoded where needed; escaped again on output


Inline = str | Strong | Link
Text = tuple[Inline, ...]


@dataclass(frozen=True)
class Heading:
    level: int
    text: Text


@dataclass(frozen=True)
class Para:
    text: Text
    css: str | None = None
    lang: str | None = None  # when the text is in another language than the notice


@dataclass(frozen=True)
class Bullets:
    items: tuple[Text, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[Text, ...]
    rows: tuple[tuple[tuple[Text, ...], ...], ...]  # row -> cell -> lines


Block = Heading | Para | Bullets | Table


def render_notice(policy: Policy, *, fmt: Fmt = "md", lang: Lang = "en") -> str:
    """The notice for parents about `policy`, as Markdown or a standalone HTML document."""
    if lang not in get_args(Lang):
        raise ValueError(f"lang {lang!r} is not supported; use one of {get_args(Lang)}")
    if fmt not in get_args(Fmt):
        raise ValueError(f"fmt {fmt!r} is not supported; use one of {get_args(Fmt)}")
    blocks = _Builder(policy, lang).blocks()
    if fmt == "md":
        return _to_markdown(blocks)
    return _to_html(blocks, lang=lang, title=f"{MESSAGES[lang]['notice_title']}: {policy.title}")


class _Builder:
    def __init__(self, policy: Policy, lang: Lang) -> None:
        self.p = policy
        self.lang = lang
        self.msg = MESSAGES[lang]

    # -- helpers -----------------------------------------------------------------------------

    def t(self, key: str, **values: Inline) -> Text:
        """The template `key` with its placeholders filled, as a sequence of segments."""
        out: list[Inline] = []
        for literal, name, _spec, _conv in string.Formatter().parse(self.msg[key]):
            if literal:
                out.append(literal)
            if name is not None:
                out.append(values[name])
        return tuple(out)

    def s(self, key: str, **values: str) -> str:
        return self.msg[key].format(**values)

    def labelled(self, label_key: str, text: Text) -> Text:
        return (Strong(self.msg[label_key]), " ", *text)

    def join(self, items: Sequence[str]) -> str:
        """'a, b, and c' (US serial comma) / 'a, b y c' ('y' becomes 'e' before an i- sound)."""
        items = list(items)
        if len(items) <= 1:
            return "".join(items)
        conj = self.msg["and"]
        last = items[-1]
        if self.lang == "es" and re.match(r"(?i)h?i(?![aeiouáéíóú])", last):
            conj = "e"
        comma = "," if self.lang == "en" and len(items) > 2 else ""
        return f"{', '.join(items[:-1])}{comma} {conj} {last}"

    def num(self, value: float) -> str:
        if math.isclose(value, round(value), abs_tol=1e-9):
            return self.group(round(value))
        return f"{value:.3g}" if abs(value) < 1000 else self.group(round(value))

    def group(self, n: int) -> str:
        grouped = f"{n:,}"
        return grouped if self.lang == "en" else grouped.replace(",", "\u00a0")

    def percent(self, share: float) -> str:
        sep = "" if self.lang == "en" else "\u00a0"
        return f"{self.num(share * 100)}{sep}%"

    def day(self, d: date) -> str:
        month = MONTHS[self.lang][d.month - 1]
        if self.lang == "en":
            return f"{month} {d.day}, {d.year}"
        return f"{d.day} de {month} de {d.year}"

    def category(self, name: str) -> str:
        return CATEGORY_NAMES[self.lang].get(name, name.replace("_", " ").capitalize())

    def field(self, name: str) -> str:
        return FIELD_NAMES[self.lang].get(name, name.replace("_", " "))

    def access_item(self, name: str) -> str:
        return ACCESS_ITEMS[self.lang].get(name, name.replace("_", " "))

    def purpose_label(self, pid: str) -> str:
        """A short name for a purpose (Spanish: the officer's text when the id is unknown)."""
        known = PURPOSE_NAMES[self.lang].get(pid)
        if known is not None:
            return known
        if self.lang == "en":
            return pid.replace("_", " ").capitalize()
        return self.p.purposes[pid]

    def purpose_why(self, pid: str) -> Text:
        if self.lang == "en":
            return self.t(
                "purpose_line",
                label=Strong(self.purpose_label(pid)),
                description=self.p.purposes[pid],
            )
        return (_sentence(self.purpose_label(pid)),)

    def retention(self, days: int | None) -> str:
        if days is None:
            return self.s("retention_unset")
        plain = self.s("retention_day") if days == 1 else self.s("retention_days", days=str(days))
        whole = None
        if days % 365 == 0:
            n = days // 365
            whole = self.s("years_1") if n == 1 else self.s("years_n", n=str(n))
        elif days % 30 == 0:
            n = days // 30
            whole = self.s("months_1") if n == 1 else self.s("months_n", n=str(n))
        return plain if whole is None else self.s("retention_with_unit", days=plain, whole=whole)

    def period(self) -> str:
        m = re.fullmatch(r"(\d{4})\s*[-–/]\s*(\d{4})", self.p.period.strip())
        if m and int(m.group(2)) == int(m.group(1)) + 1:
            return self.s("period_school_year", period=self.p.period)
        return self.s("period_other", period=self.p.period)

    # -- sections ----------------------------------------------------------------------------

    def blocks(self) -> list[Block]:
        return [
            *self.intro(),
            *self.collected(),
            *self.leaves(),
            *self.rights(),
            *self.access(),
            *self.contact(),
            *self.about(),
        ]

    def enabled(self) -> list[tuple[str, CategoryRule]]:
        return [(name, rule) for name, rule in self.p.categories.items() if rule.enabled]

    def disabled(self) -> list[tuple[str, CategoryRule]]:
        return [(name, rule) for name, rule in self.p.categories.items() if not rule.enabled]

    def intro(self) -> list[Block]:
        used = {pid for _, rule in self.enabled() for pid in rule.purposes}
        pids = [pid for pid in self.p.purposes if pid in used] or list(self.p.purposes)
        # Short names go lower-case inside the sentence; an officer's own text stays as written.
        labels = [
            _lower_first(self.purpose_label(pid))
            if self.lang == "en" or pid in PURPOSE_NAMES[self.lang]
            else f"«{self.purpose_label(pid).strip().rstrip('.')}»"
            for pid in pids
        ]
        return [
            Heading(1, (self.msg["notice_title"],)),
            # The title is the officer's own text, in English (see about_purposes_language).
            Para((self.p.title,), css="lead", lang=None if self.lang == "en" else "en"),
            Para(
                self.t(
                    "summary",
                    organisation=self.p.issued_by.organisation,
                    purposes=self.join(labels),
                )
            ),
        ]

    def collected(self) -> list[Block]:
        enabled, disabled = self.enabled(), self.disabled()
        rows = []
        for name, rule in enabled:
            fields = (
                _sentence(self.join([self.field(f) for f in rule.fields]))
                if rule.fields
                else self.s("no_fields")
            )
            why = tuple(self.purpose_why(pid) for pid in rule.purposes) or (
                (self.s("no_purpose"),),
            )
            rows.append(
                (
                    ((self.category(name),),),
                    ((fields,),),
                    why,
                    ((self.retention(rule.retention_days),),),
                )
            )
        out: list[Block] = [
            Heading(2, (self.msg["h_collected"],)),
            Para((self.msg["collected_intro"],)),
        ]
        if rows:
            headers = ("th_category", "th_fields", "th_why", "th_retention")
            out.append(Table(tuple((self.msg[h],) for h in headers), tuple(rows)))
            if any(rule.retention_days is not None for _, rule in enabled):
                out.append(Para((self.msg["deleted_after"],)))
        notes: list[Text] = [
            self.t("explicit_enabled", category=self.category(name))
            for name, rule in enabled
            if rule.consent == "explicit"
        ]
        if disabled:
            names = [_lower_first(self.category(name)) for name, _ in disabled]
            notes.append(self.t("not_collected", categories=self.join(names)))
            explicit = [name for name, rule in disabled if rule.consent == "explicit"]
            if explicit and len(explicit) == len(disabled):
                notes.append(self.t("explicit_disabled_all"))
            else:
                notes.extend(
                    self.t("explicit_disabled_one", category=_lower_first(self.category(name)))
                    for name in explicit
                )
        out.extend(Para(note) for note in notes)
        return out

    def leaves(self) -> list[Block]:
        b = self.p.budget
        share = b.training_share
        if share >= 1:
            split = self.t("leaves_split_training_only")
        elif share <= 0:
            split = self.t("leaves_split_stats_only")
        else:
            split = self.t(
                "leaves_split",
                training_epsilon=Strong(f"ε = {self.num(self.p.training_budget.epsilon)}"),
                training_percent=self.percent(share),
                stats_epsilon=Strong(f"ε = {self.num(self.p.analytics_budget.epsilon)}"),
                stats_percent=self.percent(1 - share),
            )
        inverse = 1 / b.delta
        one_in = (
            self.s("one_in_exact", n=self.group(round(inverse)))
            if math.isclose(inverse, round(inverse), rel_tol=1e-9)
            else self.s("one_in_about", n=self.group(round(inverse)))
        )
        k = self.p.min_cohort_k
        items: list[Text] = [
            (
                *self.t(
                    "leaves_budget",
                    epsilon=Strong(f"ε = {self.num(b.epsilon)}"),
                    period=self.period(),
                ),
                " ",
                *split,
                " ",
                *self.t("leaves_budget_spent"),
            ),
            self.t("leaves_delta", delta=_plain_decimal(b.delta), one_in=one_in),
            self.t("leaves_k", k=Strong(str(k))) if k > 1 else self.t("leaves_k_none"),
            self.t(
                "leaves_secagg_on" if self.p.secure_aggregation_required else "leaves_secagg_off"
            ),
            self.t("leaves_min_school", n=Strong(str(self.p.min_school_size))),
        ]
        return [
            Heading(2, (self.msg["h_leaves"],)),
            Para((self.msg["leaves_only"],)),
            Para((self.msg["leaves_dp"],)),
            Bullets(tuple(items)),
        ]

    def rights(self) -> list[Block]:
        c = self.p.consent
        when = self.s(OPT_OUT_WHEN[c.opt_out_takes_effect])
        rights = [
            ("right_inspect", c.inspect, self.t("right_inspect_yes")),
            ("right_correct", c.correct, self.t("right_correct_yes")),
            ("right_opt_out", c.opt_out, self.t("right_opt_out_yes", when=when)),
        ]
        items = tuple(
            self.labelled(label, text if offered else self.t("right_not_offered"))
            for label, offered, text in rights
        )
        closing = "rights_how" if any(offered for _, offered, _ in rights) else "rights_none"
        return [Heading(2, (self.msg["h_rights"],)), Bullets(items), Para((self.msg[closing],))]

    def access(self) -> list[Block]:
        a = self.p.access
        items = []
        for role, granted in (
            ("role_staff", a.staff),
            ("role_it", a.it),
            ("role_parents", a.parents),
        ):
            what = self.join([self.access_item(i) for i in granted]) or self.msg["access_nothing"]
            items.append(self.labelled(role, (what + ".",)))
        return [
            Heading(2, (self.msg["h_access"],)),
            Bullets(tuple(items)),
            Para((self.msg["access_stays"],)),
        ]

    def contact(self) -> list[Block]:
        who = self.p.issued_by
        email = who.contact_email
        items: list[Text] = [
            self.labelled("contact_officer", (who.privacy_officer,)),
            self.labelled("contact_organisation", (who.organisation,)),
            self.labelled("contact_email", (Link(email, "mailto:" + quote(email, safe="@.+-_")),)),
        ]
        if who.contact_phone:
            tel = "tel:" + re.sub(r"[^0-9+]", "", who.contact_phone)
            items.append(self.labelled("contact_phone", (Link(who.contact_phone, tel),)))
        return [Heading(2, (self.msg["h_contact"],)), Bullets(tuple(items))]

    def about(self) -> list[Block]:
        out: list[Block] = [
            Heading(2, (self.msg["h_about"],)),
            Para(
                (
                    *self.t(
                        "about_policy",
                        policy_id=Strong(self.p.policy_id),
                        version=Strong(str(self.p.version)),
                    ),
                    " ",
                    *self.t(
                        "about_validity",
                        valid_from=self.day(self.p.valid_from),
                        valid_until=self.day(self.p.valid_until),
                    ),
                ),
                css="small",
            ),
        ]
        if self.msg["about_purposes_language"]:
            out.append(Para((self.msg["about_purposes_language"],), css="small"))
        return out


def _sentence(text: str) -> str:
    """Capitalised, ending with a full stop."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _lower_first(text: str) -> str:
    # Keep words that are capitalised inside (names, acronyms) as they are.
    if len(text) > 1 and text[1].isupper():
        return text
    return text[:1].lower() + text[1:]


def _plain_decimal(value: float) -> str:
    """0.00001 rather than 1e-05."""
    return format(Decimal(repr(value)).normalize(), "f")


# --------------------------------------------------------------------------------------------
# Renderers
# --------------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def _md_escape(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", re.sub(r"\s+", " ", text))


def _md_inline(text: Text) -> str:
    out = []
    for seg in text:
        if isinstance(seg, Strong):
            out.append(f"**{_md_escape(seg.text)}**")
        elif isinstance(seg, Link):
            href = seg.href.replace("(", "%28").replace(")", "%29").replace(" ", "%20")
            out.append(f"[{_md_escape(seg.text)}]({href})")
        else:
            out.append(_md_escape(seg))
    return "".join(out)


def _to_markdown(blocks: list[Block]) -> str:
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {_md_inline(block.text)}")
        elif isinstance(block, Para):
            line = _md_inline(block.text)
            parts.append(f"**{line}**" if block.css == "lead" else line)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {_md_inline(item)}" for item in block.items))
        else:
            lines = [
                "| " + " | ".join(_md_inline(h) for h in block.headers) + " |",
                "|" + "|".join("---" for _ in block.headers) + "|",
            ]
            for row in block.rows:
                cells = (" ".join(_md_inline(line) for line in cell) for cell in row)
                lines.append("| " + " | ".join(cells) + " |")
            parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _html_inline(text: Text) -> str:
    out = []
    for seg in text:
        if isinstance(seg, Strong):
            out.append(f"<strong>{html.escape(seg.text)}</strong>")
        elif isinstance(seg, Link):
            out.append(f'<a href="{html.escape(seg.href)}">{html.escape(seg.text)}</a>')
        else:
            out.append(html.escape(seg))
    return "".join(out)


def _html_cell(tag: str, lines: tuple[Text, ...], attrs: str = "") -> str:
    if len(lines) == 1:
        return f"<{tag}{attrs}>{_html_inline(lines[0])}</{tag}>"
    items = "".join(f"<li>{_html_inline(line)}</li>" for line in lines)
    return f"<{tag}{attrs}><ul>{items}</ul></{tag}>"


def _to_html(blocks: list[Block], *, lang: str, title: str) -> str:
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_html_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            cls = f' class="{html.escape(block.css)}"' if block.css else ""
            cls += f' lang="{html.escape(block.lang)}"' if block.lang else ""
            body.append(f"<p{cls}>{_html_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            items = "\n".join(f"  <li>{_html_inline(item)}</li>" for item in block.items)
            body.append(f"<ul>\n{items}\n</ul>")
        else:
            head = "".join(f'<th scope="col">{_html_inline(h)}</th>' for h in block.headers)
            rows = "\n".join(
                "  <tr>"
                + _html_cell("th", row[0], ' scope="row"')
                + "".join(_html_cell("td", cell) for cell in row[1:])
                + "</tr>"
                for row in block.rows
            )
            body.append(
                '<div class="table-wrap">\n<table>\n'
                f"<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>\n</div>"
            )
    return (
        "<!doctype html>\n"
        f'<html lang="{html.escape(lang)}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )
