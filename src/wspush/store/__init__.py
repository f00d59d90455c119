"""DynamoDB: the only package that talks to it (the connections table, the channels table)."""
