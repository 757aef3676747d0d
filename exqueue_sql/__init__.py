"""SQLStorage: SQLAlchemy 2 Core backend for SQLite, PostgreSQL and MariaDB/MySQL."""
