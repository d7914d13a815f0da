"""Every packaged model: its name, family, builder (imported on first use), default recipe and description.

Nothing here imports torch, so `zoo list` and `zoo --help` stay fast; `zoo.models.registry.create_model` imports a
family's module only when one of its models is built. A family adds its models here.
"""

from zoo.models.registry import Recipe, register_model

# The published recipe, except where training without pretrained weights changes the answer: a random backbone
# must learn rather than be fine-tuned, so it learns at the heads' rate, and it is not frozen first: two-stage
# fine-tuning (heads first) would train the heads on random features.
P2PNET = Recipe(
    optimizer="adam",
    lr=1e-4,
    backbone_lr=1e-4,  # published: 1e-5, for an ImageNet-pretrained trunk
    batch_size=8,
    crops_per_image=4,
    crop_size=128,
    scale_range=(0.7, 1.3),
    flip=True,
    grad_clip=0.1,
    threshold=0.5,
    # An undertrained classifier scores true heads low, so the best threshold moves as training goes on: each
    # validation decodes these candidates from one forward pass and the checkpoint keeps the best of them.
    threshold_candidates=tuple(round(0.05 * k, 2) for k in range(2, 15)),
)

# Adam for the whole net, backbone included (nothing is pretrained here), at the rate that trained best on the
# synthetic default among those tried. The published SGD (lr 1e-7, momentum 0.95, weight decay 5e-4, batch 1) is
# tuned for an ImageNet-initialized VGG, a summed loss and per-pixel targets; to reproduce it: `--set optimizer=sgd
# --lr 1e-7 --backbone-lr 1e-7 --set momentum=0.95 --set weight_decay=5e-4 --batch-size 1`. The threshold (heads
# per 8x8 cell) only decides which local maxima of the density count as points for the localization metrics; it
# was chosen on validation F1 at 8 px.
CSRNET = Recipe(optimizer="adam", lr=3e-4, backbone_lr=3e-4, epochs=20, batch_size=8, crop_size=128,
                scale_range=(0.8, 1.2), flip=True, warmup_epochs=1, threshold=0.02)

CPN = Recipe(optimizer="adam", lr=1e-3, backbone_lr=1e-3, epochs=20, threshold=0.3)

register_model("p2pnet", builder="zoo.models.families.p2pnet:p2pnet", recipe=P2PNET, family="points",
               description="P2PNet: VGG-16 point proposals around anchors, Hungarian-matched to heads")
register_model("csrnet", builder="zoo.models.families.csrnet:csrnet", recipe=CSRNET, family="density",
               description="CSRNet (paper): VGG-16 frontend + dilated backend, density at stride 8 (count = its sum)")
register_model("csrnet_bn", builder="zoo.models.families.csrnet:csrnet_bn", recipe=CSRNET, family="density",
               description="CSRNet with batch norm (vgg16_bn frontend, BN backend): the variant the zoo trains")
register_model("cpn", builder="zoo.models.families.cpn:cpn", recipe=CPN, family="heatmap",
               description="CPN: ResNet-50 + GlobalNet + RefineNet heatmaps at stride 4, L2 + OHKM")
register_model("cpn_r18", builder="zoo.models.families.cpn:cpn_r18", recipe=CPN, family="heatmap",
               description="CPN on ResNet-18: the CPU-friendly variant (a lighter trunk; the stride-4 neck it "
                           "keeps limits the saving at small crops)")
