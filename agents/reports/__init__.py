"""Reports to hand over: recovery evidence and service levels, as signed documents.

`recovery` and `sla` build the facts, `document` the envelope every report shares
(`opsagent-report/1`, described by docs/report-schema.json), `signing` the Ed25519
signature over its canonical JSON, `gather` reads the agent's state, case store and
repository for them; `html` and `svg` render a signed document for people.
"""
