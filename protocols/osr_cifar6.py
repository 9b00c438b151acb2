"""Open-set recognition "CIFAR" 6/4 (MOODCAT Table 3): the five splits of Neal et al., CAC and CVAECapOSR.

Unknown CIFAR-10 classes per split, in order split0..split4: [3,6,7,8], [1,2,4,6], [2,3,4,9],
[0,1,2,6], [4,5,6,9] (SPEC.md section 2); the other 6 are known, relabelled 0..5 ascending.
"""
from bench.protocol import OpenSetProtocol, OpenSetSplit, register_protocol

UNKNOWN = ((3, 6, 7, 8), (1, 2, 4, 6), (2, 3, 4, 9), (0, 1, 2, 6), (4, 5, 6, 9))

register_protocol(
    OpenSetProtocol(
        name="osr_cifar6",
        description="OSR CIFAR 6/4: 6 known CIFAR-10 classes vs the other 4 (5 splits of Neal et al. / CAC)",
        datasets={"cifar10": [OpenSetSplit(f"split{i}", tuple(c for c in range(10) if c not in unknown))
                              for i, unknown in enumerate(UNKNOWN)]},
        total_classes={"cifar10": 10},
    )
)
