"""API resources, one module each; every handler: authenticate (dependency), authorize (one
explicit call), call services, convert the result to a schema."""
