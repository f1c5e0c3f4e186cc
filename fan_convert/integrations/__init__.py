"""Integrations with other model libraries. Each registers its rules and plan defaults with the
rule table (:func:`fan_convert.surgery.rules.register_integration`) when the table loads, so the
generic planner knows a library only through the table."""
