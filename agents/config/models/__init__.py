"""The models of the agent's config file, one module per section; `agent.Config` is the
whole file."""
