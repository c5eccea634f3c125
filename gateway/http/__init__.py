"""HTTP transport of the gateway: the route table, admission, problems and the REST endpoints."""
