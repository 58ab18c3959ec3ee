-- The read-only role Grafana's "opsagent case store" data source logs in as: SELECT on
-- the cases and their timelines, nothing else (no outbox, no notifier registry, no
-- writes). Run it in the case store's database, as its owner, after the agent has
-- created the tables (its first start):
--
--   psql -v ON_ERROR_STOP=1 -d opsagent -f deploy/grafana/cases-readonly.sql
--   psql -d opsagent -c '\password grafana_cases'
--
-- then put that password in /etc/grafana/opsagent-cases-password. Running it again is
-- harmless. Every query the dashboard makes is run as this role by
-- tests/integration/test_grafana_cases_sql.py.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'grafana_cases') THEN
    CREATE ROLE grafana_cases LOGIN CONNECTION LIMIT 8;
  END IF;
END
$$;

-- read-only sessions by default, no dashboard query runs for more than 30 s, and a
-- backslash in a search box is a backslash even where the server still treats it as an
-- escape (standard_conforming_strings = off): Grafana doubles quotes, not backslashes
ALTER ROLE grafana_cases SET default_transaction_read_only = on;
ALTER ROLE grafana_cases SET statement_timeout = '30s';
ALTER ROLE grafana_cases SET standard_conforming_strings = on;

DO $$
BEGIN
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO grafana_cases', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO grafana_cases;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM grafana_cases;
GRANT SELECT ON cases, case_events TO grafana_cases;
