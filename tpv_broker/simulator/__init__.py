"""A discrete-event scheduling simulator that drives the real ranking code
and the real snapshot and in-flight stores (on fakeredis, with a simulated
clock), to compare placement policies on one arrival sequence."""
