"""Policy files: the schema, the loader and the district's policy files themselves."""
