"""Channels and presence: names, who may subscribe, subscribing, members, a connection's end."""
