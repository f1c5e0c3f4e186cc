"""Integrations with other model libraries. Each registers its rules and plan defaults with the
rule table (:func:`fan_convert.surgery.rules.register_integration`) when it is imported; the
package root declares them (:mod:`fan_convert.extensions`) so that the table imports them when it
first loads, and the generic planner knows a library only through the table."""
