"""Rendering messages: templates, formatting filters, the customers' contexts and SMS segments.

    templates.py  one folder per message, one file per channel part; sandboxed Jinja
    filters.py    money, number, decimal, day_month, plural in the customer's locale; g, relative_days
    russian.py    Russian that agrees (pymorphy3): gender_of, agree, inflect, verb, agree_verb,
                  month_in, relative_days, passed, remaining
    lint.py       the template linter: renders every part against edge cases, reports bad Russian
    context.py    what a template may say about a customer, built a batch at a time
    sms.py        SMS encodings and segment counts
    pool.py       rendering in a second process
"""

from channels.render.filters import day_month, decimal, money, number, plural
from channels.render.templates import (
    PARTS,
    Rendered,
    TemplateError,
    TemplateSecurityError,
    channels_of,
    meta,
    render,
    template_hash,
    template_names,
    templates_dir,
)

__all__ = ["PARTS", "Rendered", "TemplateError", "TemplateSecurityError", "channels_of", "day_month", "decimal", "meta",
           "money", "number", "plural", "render", "template_hash", "template_names", "templates_dir"]
