"""The PostgreSQL engine, for several instances on one database (CONTRACT section 5)."""
