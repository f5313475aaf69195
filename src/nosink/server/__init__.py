"""The embedding server (extra ``nosink[server]``): OpenAI- and TEI-compatible routes over any plan."""
