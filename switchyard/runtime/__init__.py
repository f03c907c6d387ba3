"""The runtime layer: the app container, job declaration, the one way in, queue counts.

`app.App` holds one process's settings, broker, state store, providers, database and
declared jobs; `jobs` turns a family's `@job` functions into Dramatiq actors with a
payload model and a context; `enqueue` is how every producer sends; `queues` reads the
brokers' queue counts once for every reader. Building and booting an `App` is the top
layer's (`switchyard.boot`).
"""
