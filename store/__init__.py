"""The database: models, the queries the actors need, and the schema's migrations."""
