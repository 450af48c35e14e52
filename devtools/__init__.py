"""Tools around the service, not part of it: the embedded broker launcher, the demo traffic and the benchmark."""
