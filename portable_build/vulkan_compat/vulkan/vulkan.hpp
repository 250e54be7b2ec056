// glmv-portable: a wrapper in front of the system's <vulkan/vulkan.hpp> for building ggml-vulkan.
//
// Why: ggml-vulkan's instance set-up names three declarations of VK_EXT_layer_settings
// (vk::LayerSettingEXT, vk::LayerSettingTypeEXT::eBool32, vk::LayerSettingsCreateInfoEXT) that
// Vulkan headers before 1.3.251 lack (Debian 12 ships 1.3.239). ggml chains that struct into
// vkCreateInstance unconditionally and only enables the layer under GGML_VULKAN_VALIDATE; loaders
// and drivers skip a pNext structure they do not know. These declarations have the C layout of the
// extension (VkLayerSettingEXT, VkLayerSettingsCreateInfoEXT), and the whole block vanishes with
// newer headers, which define VK_EXT_layer_settings themselves.
//
// It is found first because the build puts this folder on the include path ahead of the system's
// (-I); #include_next then takes the real header.
#pragma once
#include_next <vulkan/vulkan.hpp>

#if !defined(VK_EXT_layer_settings)
#include <cstdint>
#include <vector>

namespace vk {

enum class LayerSettingTypeEXT : int32_t {
    eBool32 = 0, eInt32 = 1, eInt64 = 2, eUint32 = 3, eUint64 = 4, eFloat32 = 5, eFloat64 = 6, eString = 7
};

struct LayerSettingEXT {
    const char *        pLayerName   = nullptr;
    const char *        pSettingName = nullptr;
    LayerSettingTypeEXT type         = LayerSettingTypeEXT::eBool32;
    uint32_t            valueCount   = 0;
    const void *        pValues      = nullptr;

    LayerSettingEXT(const char * layer = nullptr, const char * setting = nullptr,
                    LayerSettingTypeEXT t = LayerSettingTypeEXT::eBool32, uint32_t count = 0,
                    const void * values = nullptr)
        : pLayerName(layer), pSettingName(setting), type(t), valueCount(count), pValues(values) {}
};

struct LayerSettingsCreateInfoEXT {
    // VK_STRUCTURE_TYPE_LAYER_SETTINGS_CREATE_INFO_EXT in the registry
    VkStructureType         sType        = static_cast<VkStructureType>(1000496000);
    const void *            pNext        = nullptr;
    uint32_t                settingCount = 0;
    const LayerSettingEXT * pSettings    = nullptr;

    LayerSettingsCreateInfoEXT(const std::vector<LayerSettingEXT> & settings, const void * next = nullptr)
        : pNext(next), settingCount(static_cast<uint32_t>(settings.size())), pSettings(settings.data()) {}
};

}  // namespace vk
#endif
