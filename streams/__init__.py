"""Faust stream processing: an app factory and its agents (glue around pure code in ioc/ and vision/)."""
