"""Store contract tests: one abstract class per service store, subclassed for the in-memory twin
(tests/unit) and for PostgreSQL (tests/integration), so both provably behave the same."""
