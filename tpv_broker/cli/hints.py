"""What the CLI tells an admin to do when Redis cannot be used."""

# Most often a shell that does not point at the running system (the demo's
# Redis is on a new port each run).
REDIS_HINT = ("set TPV_BROKER_REDIS_URL (or redis.url in --config) to a running Redis; "
              "for the demo (scripts/run-local.sh, while it runs): source .local/demo/env")

# Redis answered, and refused the credentials: where they go.
REDIS_AUTH_HINT = ("put the user and password into redis.url (TPV_BROKER_REDIS_URL): "
                   "redis://USER:PASSWORD@host:6379/0")
