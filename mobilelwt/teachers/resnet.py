"""ResNet (He et al., 2016): the basic-block and bottleneck depths that mobile teams start from."""

from torchvision.models import resnet as tv_resnet

from mobilelwt.teachers._api import TeacherSpec, register_teacher

cfgs = {
    "resnet18": (tv_resnet.resnet18, tv_resnet.ResNet18_Weights),
    "resnet34": (tv_resnet.resnet34, tv_resnet.ResNet34_Weights),
    "resnet50": (tv_resnet.resnet50, tv_resnet.ResNet50_Weights),
}

for _name, (_builder, _weights) in cfgs.items():
    register_teacher(TeacherSpec(name=_name, family="resnet", builder=_builder, weights_enum=_weights, head="fc"))
