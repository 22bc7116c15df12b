# PostgreSQL 15 with the HyperLogLog extension the analytics rollups use (issue 22). The official
# image is Debian with the PostgreSQL apt repository configured, which ships postgresql-15-hll.
FROM postgres:15
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15-hll \
    && rm -rf /var/lib/apt/lists/*
