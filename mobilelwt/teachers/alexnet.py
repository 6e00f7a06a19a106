"""AlexNet (Krizhevsky et al., 2012) as torchvision builds it."""

from torchvision.models import AlexNet_Weights, alexnet

from mobilelwt.teachers._api import TeacherSpec, register_teacher

register_teacher(
    TeacherSpec(name="alexnet", family="alexnet", builder=alexnet, weights_enum=AlexNet_Weights, head="classifier.6")
)
