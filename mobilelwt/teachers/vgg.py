"""VGG (Simonyan & Zisserman, 2014): the configurations A, B, D, E with and without batch norm."""

from torchvision.models import vgg as tv_vgg

from mobilelwt.teachers._api import TeacherSpec, register_teacher

# name -> (torchvision builder, weights enum); the layer layouts themselves are torchvision's ``cfgs``.
cfgs = {
    "vgg11": (tv_vgg.vgg11, tv_vgg.VGG11_Weights),
    "vgg11_bn": (tv_vgg.vgg11_bn, tv_vgg.VGG11_BN_Weights),
    "vgg13": (tv_vgg.vgg13, tv_vgg.VGG13_Weights),
    "vgg13_bn": (tv_vgg.vgg13_bn, tv_vgg.VGG13_BN_Weights),
    "vgg16": (tv_vgg.vgg16, tv_vgg.VGG16_Weights),
    "vgg16_bn": (tv_vgg.vgg16_bn, tv_vgg.VGG16_BN_Weights),
    "vgg19": (tv_vgg.vgg19, tv_vgg.VGG19_Weights),
    "vgg19_bn": (tv_vgg.vgg19_bn, tv_vgg.VGG19_BN_Weights),
}

for _name, (_builder, _weights) in cfgs.items():
    register_teacher(
        TeacherSpec(name=_name, family="vgg", builder=_builder, weights_enum=_weights, head="classifier.6")
    )
