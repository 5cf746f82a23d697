"""The portal schema: tables, migrations and the change journal."""
