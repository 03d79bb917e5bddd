"""skycache.sim: a SimPy model of repository, network and NAT load at cluster scale."""
