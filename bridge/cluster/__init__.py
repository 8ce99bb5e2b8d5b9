"""Replicas on one PostgreSQL database: the push lease (one leader) and the change feed.

``lease``: who may use the one lane to the hub, and the rule that keeps two replicas from
ever having requests out at once. ``replica``: what a replica does as leader or follower, how
it follows what the others write, how dead replicas are noticed.
"""
