"""The engine under the paper's steps: private, imports only torch and itself.

gram.py    unit vectors and gram matrices in strips: the one product every similarity comes from
exact.py   canonical similarities and error bounds: every decision made exactly
graph.py   Borůvka components, single-linkage cuts, ordering by degree (B dense graphs)
tiled.py   the same components strip by strip, for sets whose matrix does not fit
sets.py    similarity graphs, degrees, the Eq. 2 sample, and ``components_of_sets``
merge.py   the merge step's exact argmax
products.py  which dtype the products run in: bfloat16 only where the device multiplies it faster
reads.py   the host-read policy: data-sized reads or sync-free bounds, the one place the two differ
"""
