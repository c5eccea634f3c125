"""Gateway: holds client WebSockets and serves the REST API.

Per socket: authenticate the token, validate every frame strictly, rate-limit, publish sends and
receipts to their conversation's partition stream ``MSGS_<p>`` (a send is acknowledged to the client
only once JetStream stored it), forward the frames of the edge batches routers publish on
``edge.<gateway id>`` to the devices connected here (``gateway.ws.hub``), heartbeat, bounded send
queue. Stateless apart from its sockets: run as many as you like behind any load balancer."""
