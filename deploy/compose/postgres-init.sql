-- Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d), as the
-- superuser. Creates what scripts/lib.sh creates locally (the hll extension included): the owner role used by
-- DATABASE_OWNER_URL (it may create roles: `gamify-api migrate` creates the application role named in
-- DATABASE_URL and grants it DML only) and the database it owns. The passwords match the compose
-- file's DATABASE_OWNER_URL and DATABASE_URL; change all three together.
CREATE ROLE gamify_owner LOGIN CREATEROLE PASSWORD 'gamify_owner';
CREATE DATABASE gamify OWNER gamify_owner;
-- The analytics rollups' HyperLogLog type: not a trusted extension, so the superuser creates it.
\connect gamify
CREATE EXTENSION IF NOT EXISTS hll;
