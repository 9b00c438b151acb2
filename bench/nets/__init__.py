"""Network definitions, one home: backbones and the ID classifier (`backbones`), CMG's CVAE
(`cvae`), MOODCAT's generator, discriminator and C_b (`moodcat`), and the contract that every
scored network meets (`contract`).

Import the submodule you need: each cache key hashes the source of exactly the modules its
training code imports, so this file stays empty and a change to one network never
invalidates the weights of another.
"""
