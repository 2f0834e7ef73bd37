-- expire: the sweep alone. Returns the ids that expired.
return sweep(prefix, now, done_ttl, sweep_max)
