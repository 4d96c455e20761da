"""What servers_app tells the apps above it, which it must not import (DESIGN.md, "Layers").

The queue listens (queue_app/receivers.py): it runs a server's queue when the server is
available and refuses to let a server with unfinished jobs be deleted.
"""

from django.dispatch import Signal

# Sent after commit when a server was added or its configuration changed; kwargs: server_id.
server_configured = Signal()

# Sent when a health check found the server reachable, or an admin resumed it, so it can
# take work now; kwargs: server_id, came_back (it was offline or never checked before).
server_available = Signal()

# Sent by server_delete inside its transaction, with the server's row locked, before the
# row is deleted; kwargs: server. A receiver refuses the deletion by raising Conflict.
server_deleting = Signal()
